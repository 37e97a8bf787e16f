"""Runbook "Security Procedures" → Rotate API Keys, for a store: the runbook's
`python scripts/rotate_api_key.py --store-id store-123` as a flow.

    issue   a new key; the app database gets its sha256 hash (safe: undone by revoking it)
    verify  the support API accepts the new key for this store (else: it is revoked, escalate)
    deliver the key, once, to the store's contact (email) — never to logs, artifacts or Slack
    grace   the previous keys stay valid for the Policy's `store_key_grace_s`
    revoke  the previous keys (destructive: approval; re-checked after it)
    verify  they are revoked and no request with them was accepted since; the new key works

The new key exists only in this process (a `SecretStr`), so approvals pause here instead of
suspending the run: a rerun from the top could not deliver it. Bad input (a malformed or unknown
store id) fails the run before any check, in one line naming the parameter; nothing is created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blocks import AppDatabase, Email, Railway, SupportApi
from flows.acts import Platform, done_text, executor
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page, page_failed_run
from flows.scaling import operator_flow, refuse
from runbook.errors import PermanentError, RunbookError
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from runbook.verify import verify_or_undo
from tasks import app_keys
from tasks.email import send_secret_email
from tasks.support_api import check_store_key

FLOW = "rotate-store-key"
StoreId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Act = Literal["rotate", "refuse"]
ACT_ACTIONS: dict[str, tuple[ActionName, ...]] = {
    "rotate": (ActionName.ISSUE_STORE_KEY, ActionName.REVOKE_STORE_KEY),
}
OTHER_ACTS = frozenset({"refuse"})


class StoreKeySignals(BaseModel):
    """The store, its keys now, and the new key's public parts (never its value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store_id: str
    store_active: bool = True
    contact: str | None = None
    email_configured: bool = True
    previous_ids: tuple[int, ...] = ()  # the store's live keys now: revoked after the grace
    previous_prefixes: tuple[str, ...] = ()
    new_prefix: str
    new_sha256: str

    @property
    def target(self) -> str:
        return f"store:{self.store_id}"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    specs: tuple[ActSpec, ...] = ()  # issue, then (when there are previous keys) revoke


def decide(s: StoreKeySignals, policy: PolicyRules) -> Decision:
    """Rotate when the new key can reach the store; the revocation of the previous keys is a
    second, destructive act after the Policy's grace period."""
    if not s.store_active:
        return Decision(act="refuse", why=f"store {s.store_id} is not active: no key issued")
    if not s.contact:
        return Decision(
            act="refuse",
            why=f"store {s.store_id} has no contact on file to deliver a new key to; no key issued",
        )
    if not s.email_configured:
        return Decision(
            act="refuse",
            why="email is not configured (RUNBOOK_SMTP_HOST): the new key could not be delivered;"
            " no key issued",
        )
    old = ", ".join(f"{p}…" for p in s.previous_prefixes)
    why = f"issue a new API key for {s.store_id} and deliver it once to {s.contact}" + (
        f"; keep the previous key(s) ({old}) valid for {policy.store_key_grace_s} s, then"
        " revoke them"
        if s.previous_ids
        else "; no previous live key to revoke"
    )
    issue = spec(
        policy,
        ActionName.ISSUE_STORE_KEY,
        s.target,
        why,
        {"store_id": s.store_id, "key_prefix": s.new_prefix, "key_sha256": s.new_sha256},
        {"store_id": s.store_id, "key_sha256": s.new_sha256},
    )
    if not s.previous_ids:
        return Decision(act="rotate", why=why, specs=(issue,))
    revoke = spec(
        policy,
        ActionName.REVOKE_STORE_KEY,
        s.target,
        f"the new key {s.new_prefix}… works and was delivered to {s.contact};"
        f" revoke the previous key(s) of {s.store_id}: {old}",
        {
            "store_id": s.store_id,
            "key_ids": list(s.previous_ids),
            "key_prefixes": list(s.previous_prefixes),
        },
    )
    return Decision(act="rotate", why=why, specs=(issue, revoke))


def verify_new_key(
    accepted: bool, http_status: int, for_store: str | None, store_id: str
) -> tuple[bool, str]:
    """The support API accepts the new key, for this store (pure)."""
    ok = accepted and for_store == store_id
    seen = f"accepted for {for_store}" if accepted else f"refused (HTTP {http_status})"
    return ok, f"the support API: new key {seen}"


def verify_revoked(all_revoked: bool, accepted_since: int, new_key_ok: bool) -> tuple[bool, str]:
    """The previous keys are refused: revoked in the app database, no request accepted with
    them since, and the new key still works (pure)."""
    ok = all_revoked and accepted_since == 0 and new_key_ok
    return ok, (
        f"previous key(s) {'revoked' if all_revoked else 'NOT all revoked'};"
        f" {accepted_since} request(s) accepted with them since;"
        f" new key {'accepted' if new_key_ok else 'REFUSED'}"
    )


KEY_MAIL = """Hello {store_name},

Here is your new API key for the support assistant (store {store_id}):

    {{secret}}

Use it in your integration from now on. It is shown only in this message: store it in your
secret manager and delete this email. {previous}

If you did not expect this message, tell us at once by replying to it.
"""


def _previous_line(prefixes: tuple[str, ...], until: datetime) -> str:
    if not prefixes:
        return "Your previous key is no longer valid."
    old = ", ".join(f"{p}…" for p in prefixes)
    return (
        f"Your previous key(s) ({old}) keep working until {until:%Y-%m-%d %H:%M} UTC;"
        " after that they will be revoked."
    )


class UnknownStore(PermanentError):
    """The store id names no store: the run fails before anything is created."""


def _undo_of(change: ActSpec, platform: Platform) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The executor's undo of a decided act (here: revoke the key just issued)."""
    back, params = executor(change.action).undo, change.undo_params
    if back is None or params is None:
        raise PermanentError(f"{change.action} cannot be undone")

    async def undo() -> dict[str, Any]:
        return await back(platform, params)

    return undo


async def _new_key_works(
    api: SupportApi, key: app_keys.NewStoreKey, store_id: str
) -> tuple[bool, str]:
    check = await check_store_key(api, key.value)
    return verify_new_key(check.accepted, check.http_status, check.store_id, store_id)


@operator_flow(
    name=FLOW,
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def rotate_store_key(
    store_id: StoreId,
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: Annotated[float, Field(ge=5, le=900)] = 30.0,
) -> RemediationResult:
    """Runbook Security Procedures → Rotate API Keys: a new API key for one store.

    Issues a new key (only its hash is stored), checks the support API accepts it, delivers it
    once to the store's contact by email, keeps the previous key(s) valid for the Policy's
    grace period, then revokes them after an approval and checks they are refused.

    Args:
        store_id: The store, e.g. store-123
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, create and send nothing
        verify_window_s: How long the new key may take to be accepted
    """
    db = await AppDatabase.resolve()
    store = await app_keys.get_store(db, store_id)
    if store is None:
        raise UnknownStore(
            f"{FLOW}: bad parameter store_id={store_id!r} (no such store in the app database);"
            " nothing created"
        )
    run = await IncidentRun.start(FLOW, incident_id, dry_run)
    run.keep_process = True
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    api, rw, email = await asyncio.gather(SupportApi.resolve(), Railway.resolve(), Email.resolve())
    keys = await app_keys.get_store_keys(db, [store_id])
    previous = [k for k in keys if k.live]
    new = app_keys.new_store_key()
    signals = StoreKeySignals(
        store_id=store_id,
        store_active=store.active,
        contact=store.contact_email,
        email_configured=email.configured,
        previous_ids=tuple(k.id for k in previous),
        previous_prefixes=tuple(k.key_prefix for k in previous),
        new_prefix=new.prefix,
        new_sha256=new.sha256,
    )
    evidence: dict[str, Any] = {
        "store": f"{store.id} ({store.name})",
        "contact": store.contact_email or "none on file",
        "previous keys": ", ".join(f"#{k.id} {k.key_prefix}…" for k in previous) or "none",
        "new key": f"{new.prefix}… (value delivered to the contact only)",
        "grace": f"{policy.store_key_grace_s} s",
    }
    await run.seen(f"store {store.id}: {len(previous)} live key(s)", **evidence)
    decision = decide(signals, policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        return await refuse(run, ActionName.ISSUE_STORE_KEY, signals.target, "refuse", decision.why)
    platform = Platform(railway=rw, app_db=db)
    if run.dry_run:
        for change in decision.specs:
            await run.act_spec(change, platform, evidence)
        return await run.finish(decision.act, decision.why, verified=None, summary=decision.why)

    issue = decision.specs[0]
    issued = await run.act_spec(issue, platform, evidence)
    if issued.status != "done":
        why = f"issue_store_key on {signals.target} {issued.status}: {issued.detail or 'no change'}"
        if issued.status == "already_done":
            why += (
                f"; key {new.prefix}… was issued by an earlier run of this incident and its value"
                " went with that run: check the store got it, else revoke it"
            )
        if not issued.paged:
            await run.escalate(why)
        return await run.finish(
            decision.act, decision.why, verified=None, summary=f"NOT done — {why}"
        )

    undo_issue = _undo_of(issue, platform)
    works = await verify_or_undo(
        run.request_for(issue, evidence),
        verify=lambda: _new_key_works(api, new, store_id),
        undo=undo_issue,
        page=page,
        window_s=verify_window_s,
        interval_s=2.0,
    )
    if not works.verified:
        return await run.finish(
            decision.act,
            decision.why,
            verified=False,
            summary=f"the new key was not accepted ({works.detail}); it was revoked again, the"
            " previous key(s) are untouched",
        )

    until = datetime.now(UTC) + timedelta(seconds=policy.store_key_grace_s)
    try:
        await send_secret_email(
            email,
            f"Your new support API key ({store.id})",
            KEY_MAIL.format(
                store_name=store.name,
                store_id=store.id,
                previous=_previous_line(signals.previous_prefixes, until),
            ),
            new.value,
            [store.contact_email or ""],
        )
    except RunbookError as exc:
        why = f"the new key could not be delivered to {store.contact_email} ({exc})"
        try:
            await undo_issue()
            why += "; it was revoked"
        except RunbookError as undo_error:
            why += f"; revoking it FAILED ({undo_error}): revoke {new.prefix}… by hand"
        await run.escalate(f"{FLOW} {store.id}: {why}")
        return await run.finish(decision.act, why, verified=False, summary=f"NOT done — {why}")
    await run.note(
        "delivered", f"new key {new.prefix}… delivered once, by email, to {store.contact_email}"
    )
    if len(decision.specs) == 1:
        why = f"new key {new.prefix}… issued, verified and delivered; no previous key to revoke"
        return await run.finish(decision.act, decision.why, verified=True, summary=why)

    revoke = decision.specs[1]
    await run.note(
        "grace",
        f"the previous key(s) stay valid for {policy.store_key_grace_s} s (until {until:%H:%M:%S}"
        " UTC), then their revocation is asked for",
    )
    await asyncio.sleep(policy.store_key_grace_s)
    old_ids = set(signals.previous_ids)

    async def still_live() -> bool:  # re-checked after the approval
        now = await app_keys.get_store_keys(db, [store_id])
        return any(k.live for k in now if k.id in old_ids)

    revoked = await run.act_spec(revoke, platform, evidence, still_needed=still_live)
    if revoked.status == "skipped":
        why = f"new key {new.prefix}… delivered; the previous key(s) were gone when re-checked"
        return await run.finish(decision.act, decision.why, verified=None, summary=why)
    if revoked.status != "done":
        why = (
            f"revoke_api_key on {signals.target} {revoked.status}: {revoked.detail or 'no change'};"
            f" the new key {new.prefix}… and the previous key(s) both stay valid"
        )
        if revoked.status in {"rejected", "held", "refused", "failed"} and not revoked.paged:
            await run.escalate(f"{FLOW} {store.id}: {why}")
        return await run.finish(
            decision.act, decision.why, verified=None, summary=f"NOT done — {why}"
        )

    async def old_refused() -> tuple[bool, str]:
        now = {k.id: k for k in await app_keys.get_store_keys(db, [store_id])}
        old = [now[i] for i in old_ids if i in now]
        all_revoked = all(k.revoked_at is not None for k in old)
        since = min((k.revoked_at for k in old if k.revoked_at), default=datetime.now(UTC))
        accepted = await app_keys.count_accepted_uses(db, sorted(old_ids), since)
        check = await check_store_key(api, new.value)
        return verify_revoked(all_revoked, accepted, check.accepted and check.store_id == store_id)

    checked = await verify_or_undo(
        run.request_for(revoke, evidence),
        verify=old_refused,
        page=page,
        window_s=verify_window_s,
        interval_s=2.0,
    )
    describe = done_text(ActionName.REVOKE_STORE_KEY, revoke.params)
    return await run.finish(
        decision.act,
        decision.why,
        verified=checked.verified,
        summary=f"new key {new.prefix}… delivered to {store.contact_email}; {describe};"
        f" {checked.detail}",
    )
