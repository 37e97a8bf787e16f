"""Security Procedures as pure tables: each flow's decide(), its verify verdicts, the leaked-key
pattern, and where a security alert goes. No Prefect, no network."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from flows import rotate_openai_key as rok
from flows import rotate_store_key as rsk
from flows import security_incident as si
from intake.routes import load_table, route
from runbook.actions import ActionClass
from runbook.alerts import Alert, AlertStatus
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tasks.app_keys import KeyUse, StoreKey
from tasks.openai_admin import ProjectKey

pytestmark = pytest.mark.unit
POLICY = PolicyRules()
NOW = datetime(2025, 1, 1, tzinfo=UTC)


# -- rotate-store-key ------------------------------------------------------------------------
def store(**kw: Any) -> rsk.StoreKeySignals:
    base: dict[str, Any] = {
        "store_id": "store-123",
        "contact": "owner@store-123.example.com",
        "previous_ids": (7,),
        "previous_prefixes": ("sk_store_oldOLD1",),
        "new_prefix": "sk_store_newNEW1",
        "new_sha256": "ab" * 32,
    }
    return rsk.StoreKeySignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "why"),
    [
        (store(store_active=False), "store store-123 is not active"),
        (store(contact=None), "no contact on file"),
        (store(email_configured=False), "email is not configured"),
    ],
    ids=["inactive-store", "no-contact", "no-email"],
)
def test_a_store_key_that_could_not_reach_the_store_is_never_issued(
    signals: rsk.StoreKeySignals, why: str
) -> None:
    decision = rsk.decide(signals, POLICY)
    assert decision.act == "refuse" and why in decision.why and not decision.specs


def test_rotation_issues_safely_then_revokes_the_previous_keys_destructively() -> None:
    issue, revoke = rsk.decide(store(), POLICY).specs
    assert (issue.action, issue.action_class) == (ActionName.ISSUE_STORE_KEY, ActionClass.SAFE)
    assert issue.params == {
        "store_id": "store-123",
        "key_prefix": "sk_store_newNEW1",
        "key_sha256": "ab" * 32,
    }
    assert issue.reversible, "an issued key is undone by revoking it"
    assert (revoke.action, revoke.action_class) == (
        ActionName.REVOKE_STORE_KEY,
        ActionClass.DESTRUCTIVE,
    )
    assert revoke.params["key_ids"] == [7] and revoke.target == "store:store-123"


def test_a_store_without_a_live_key_gets_one_and_nothing_is_revoked() -> None:
    decision = rsk.decide(store(previous_ids=(), previous_prefixes=()), POLICY)
    assert [s.action for s in decision.specs] == [ActionName.ISSUE_STORE_KEY]
    assert "no previous live key" in decision.why


@pytest.mark.parametrize(
    ("accepted", "status", "for_store", "ok"),
    [(True, 200, "store-123", True), (True, 200, "store-204", False), (False, 401, None, False)],
)
def test_verify_new_key_table(accepted: bool, status: int, for_store: str | None, ok: bool) -> None:
    assert rsk.verify_new_key(accepted, status, for_store, "store-123")[0] is ok


@pytest.mark.parametrize(
    ("revoked", "accepted", "new_ok", "ok"),
    [
        (True, 0, True, True),
        (False, 0, True, False),
        (True, 2, True, False),
        (True, 0, False, False),
    ],
)
def test_verify_revoked_table(revoked: bool, accepted: int, new_ok: bool, ok: bool) -> None:
    assert rsk.verify_revoked(revoked, accepted, new_ok)[0] is ok


def test_grace_period_is_a_bounded_policy_number() -> None:
    assert PolicyRules().store_key_grace_s == 3600
    for bad in (-1, 86_401):
        with pytest.raises(ValidationError):
            PolicyRules(store_key_grace_s=bad)
    with pytest.raises(ValidationError):
        PolicyRules(security_window_s=10)


# -- rotate-openai-key -----------------------------------------------------------------------
USER_KEY = ProjectKey(id="key_user", redacted_value="sk-sbx...1e2f", owner_type="user")
SVC_KEY = ProjectKey(
    id="key_svc", redacted_value="sk-svc...9a9a", owner_type="service_account", owner_id="svc_1"
)


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("sk-sbx-5d2f1e2f", ("key_user",)),
        ("sk-svcacct-0009a9a", ("key_svc",)),
        ("sk-other-000000", ()),
        (None, ()),
    ],
)
def test_the_apps_key_is_found_by_its_redacted_form(
    value: str | None, ids: tuple[str, ...]
) -> None:
    secret = SecretStr(value) if value else None
    assert rok.live_keys((USER_KEY, SVC_KEY), secret) == ids


def openai(**kw: Any) -> rok.OpenAiKeySignals:
    base: dict[str, Any] = {
        "project_id": "proj_1",
        "keys": (USER_KEY, SVC_KEY),
        "live_key_ids": ("key_user",),
        "service_target": "railway:svc",
        "account_name": "support-api-x",
    }
    return rok.OpenAiKeySignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "why"),
    [
        (openai(variable_set=False), "OPENAI_API_KEY is not set"),
        (openai(live_key_ids=()), "is none of project proj_1's keys"),
        (openai(live_key_ids=("key_user", "key_svc")), "matches several project keys"),
        (openai(chat_ok=False, chat_summary="HTTP 502"), "fails now (HTTP 502)"),
        (
            openai(unfinished="incident inc-1 left key key_old valid"),
            "an earlier rotation is unfinished: incident inc-1 left key key_old valid",
        ),
    ],
    ids=["unset", "unknown-key", "ambiguous", "app-already-failing", "earlier-rotation-unfinished"],
)
def test_openai_rotation_is_refused_when_its_verify_could_not_tell(
    signals: rok.OpenAiKeySignals, why: str
) -> None:
    decision = rok.decide(signals, POLICY)
    assert decision.act == "refuse" and why in decision.why and not decision.specs


def test_openai_rotation_is_issue_then_redeploy_then_revoke() -> None:
    issue, redeploy, revoke = rok.decide(openai(), POLICY).specs
    assert [s.action for s in (issue, redeploy, revoke)] == list(rok.ACT_ACTIONS["rotate"])
    assert [s.action_class for s in (issue, redeploy, revoke)] == [
        ActionClass.SAFE,
        ActionClass.DESTRUCTIVE,
        ActionClass.DESTRUCTIVE,
    ]
    assert issue.params == {
        "service_account_name": "support-api-x",
        "variable": "OPENAI_API_KEY",
        "replaces_key": "key_user",  # a later run can tell whether this rotation finished
    }
    assert redeploy.target == "railway:svc"
    assert redeploy.params["replaces_key"] == "key_user", "the approver sees which key goes"
    assert (revoke.params["key_id"], revoke.params["owner"]) == ("key_user", "user")


def test_an_old_service_account_key_is_revoked_by_retiring_its_account() -> None:
    revoke = rok.decide(openai(live_key_ids=("key_svc",)), POLICY).specs[2]
    assert revoke.params["owner"] == "service_account"
    assert revoke.params["service_account_id"] == "svc_1"


def test_a_policy_block_cannot_make_revoking_the_openai_key_safe() -> None:
    looser = PolicyRules(action_classes={"revoke_openai_key": "safe"})
    from runbook.policy import Floor

    revoke = rok.decide(openai(), looser.with_floor(Floor())).specs[2]
    assert revoke.action_class is ActionClass.DESTRUCTIVE, "a block cannot loosen it"


@pytest.mark.parametrize(
    ("ok", "status", "error", "verdict"),
    [(True, 200, None, True), (False, 502, "llm: openai invalid_api_key", False)],
)
def test_verify_completion_table(ok: bool, status: int, error: str | None, verdict: bool) -> None:
    assert rok.verify_completion(ok, status, error)[0] is verdict


@pytest.mark.parametrize(
    ("listed", "chat", "ok"),
    [(["key_new"], True, True), (["key_new", "key_old"], True, False), (["key_new"], False, False)],
)
def test_verify_old_revoked_table(listed: list[str], chat: bool, ok: bool) -> None:
    assert rok.verify_old_revoked("key_old", listed, chat)[0] is ok


# -- security-incident -----------------------------------------------------------------------
def use(store: str | None, prefix: str | None, ip: str, path: str, accepted: int = 5) -> KeyUse:
    return KeyUse(
        store_id=store,
        key_prefix=prefix,
        ip=ip,
        method="GET" if path != "/v1/chat" else "POST",
        path=path,
        accepted=accepted,
        denied=0 if accepted else 3,
        first_seen=NOW,
        last_seen=NOW,
    )


def key(key_id: int, store: str, prefix: str, live: bool = True) -> StoreKey:
    return StoreKey(
        id=key_id,
        store_id=store,
        key_prefix=prefix,
        created_at=NOW,
        disabled_at=None if live else NOW,
    )


KEYS = (
    key(1, "store-123", "sk_store_aaaaaaa"),
    key(2, "store-204", "sk_store_bbbbbbb"),
    key(3, "store-318", "sk_store_ccccccc"),
    key(4, "store-318", "sk_store_ddddddd"),  # the store's second key: not used by the attacker
)
NORMAL = (
    use("store-123", "sk_store_aaaaaaa", "198.51.100.3", "/v1/chat", 300),
    use("store-204", "sk_store_bbbbbbb", "198.51.100.12", "/v1/chat", 280),
    use("store-318", "sk_store_ccccccc", "198.51.100.25", "/v1/chat", 250),
    # one client checking keys of two stores (an operator's test): not a leak
    use("store-123", "sk_store_aaaaaaa", "127.0.0.1", "/v1/store", 1),
    use("store-204", "sk_store_bbbbbbb", "127.0.0.1", "/v1/store", 1),
)
LEAK = (
    use("store-318", "sk_store_ccccccc", "185.220.101.7", "/v1/conversations/export"),
    use("store-204", "sk_store_bbbbbbb", "185.220.101.7", "/v1/store", 2),  # same attacker
    use(None, "sk_store_zzzzzzz", "185.220.101.7", "/v1/admin/keys", accepted=0),
)


def signals(uses: tuple[KeyUse, ...], **kw: Any) -> si.SecuritySignals:
    return si.SecuritySignals(window_s=3600, uses=uses, keys=KEYS, **kw)


def test_leaked_key_pattern_scopes_exactly_the_stores_whose_keys_the_attacker_used() -> None:
    decision = si.decide(signals(NORMAL + LEAK), POLICY)
    assert decision.act == "contain"
    assert [(s.store_id, s.key_ids) for s in decision.scope] == [
        ("store-204", (2,)),  # used from an address that pulled an export
        ("store-318", (3,)),  # used for the export; its unused key #4 stays
    ]
    assert decision.spec is not None
    assert decision.spec.action is ActionName.DISABLE_API_KEY
    assert decision.spec.action_class is ActionClass.DESTRUCTIVE
    assert decision.spec.params["key_ids"] == [2, 3]
    assert decision.spec.target == "stores:store-204,store-318"
    assert decision.scope[1].ips == ("185.220.101.7",)


@pytest.mark.parametrize(("from_alert", "act"), [(False, "none"), (True, "escalate")])
def test_ordinary_traffic_contains_nothing(from_alert: bool, act: str) -> None:
    decision = si.decide(signals(NORMAL, from_alert=from_alert), POLICY)
    assert (decision.act, decision.scope, decision.spec) == (act, (), None)


def test_implicated_keys_already_off_need_a_human_not_an_act() -> None:
    keys = (key(3, "store-318", "sk_store_ccccccc", live=False),)
    decision = si.decide(si.SecuritySignals(window_s=60, uses=LEAK[:1], keys=keys), POLICY)
    assert decision.act == "escalate" and decision.spec is None
    assert decision.scope[0].already_off == (3,)


def test_a_store_named_by_hand_has_all_its_live_keys_contained() -> None:
    decision = si.decide(signals(NORMAL, named=("store-318",)), POLICY)
    assert [(s.store_id, s.key_ids) for s in decision.scope] == [("store-318", (3, 4))]


@pytest.mark.parametrize(
    ("live", "accepted", "ok"), [(False, 0, True), (True, 0, False), (False, 1, False)]
)
def test_verify_contained_table(live: bool, accepted: int, ok: bool) -> None:
    keys = [key(3, "store-318", "sk_store_ccccccc", live=live)]
    assert si.verify_contained([3], keys, accepted)[0] is ok


# -- the intake routes security alerts --------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "summary", "labels", "expected"),
    [
        ("AnyName", "", {"category": "security"}, "security-incident"),
        ("SecurityAlert", "errors from the database", {"type": "security"}, "security-incident"),
        ("LeakedKey", "store key leaked on a public repository", {}, "security-incident"),
        ("Secrets", "API key exposed in the client logs", {}, "security-incident"),
        ("WAF", "unauthorized access to /admin", {}, "security-incident"),
        ("MemoryLeak", "memory leak in the key cache", {}, "triage"),
        ("OpenAIErrors", "Incorrect API key provided", {}, "llm-provider"),
    ],
)
def test_security_alerts_route_to_security_incident(
    name: str, summary: str, labels: dict[str, str], expected: str
) -> None:
    alert = Alert(
        source="alertmanager",
        name=name,
        status=AlertStatus.FIRING,
        summary=summary,
        labels=labels,
    )
    placement = route(load_table(), alert)
    assert placement.route == expected
    if expected == "security-incident":
        assert placement.flow == "security-incident" and not placement.suppressible
