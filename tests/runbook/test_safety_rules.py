"""Safety rules with no services: action classes, approval needs, codes, answers, redaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from blocks.policy import Policy
from runbook import redact
from runbook.actions import (
    ActionClass,
    ActionRequest,
    action_class,
    approvals_needed,
    needs_approval,
)
from runbook.approval import (
    ApprovalInput,
    check_answer,
    code_matches,
    describe_request,
    one_time_code,
)

pytestmark = pytest.mark.unit

SECRET = b"unit-test-approval-secret"
EXPIRES = datetime(2026, 11, 29, 3, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "auto", "cls", "gated"),
    [
        ("switch_model", False, ActionClass.SAFE, False),
        ("scale_replicas", False, ActionClass.SAFE, False),
        ("rollback_deployment", False, ActionClass.DESTRUCTIVE, True),
        ("modify_db_instance_class", False, ActionClass.DESTRUCTIVE, True),
        ("something_new", False, ActionClass.DESTRUCTIVE, True),  # unknown = destructive
        ("rollback_deployment", True, ActionClass.DESTRUCTIVE, False),  # staging auto-approve
    ],
)
def test_action_class_and_approval_table(
    action: str, auto: bool, cls: ActionClass, gated: bool
) -> None:
    policy = Policy(auto_approve=auto)
    assert action_class(policy, action) is cls
    assert needs_approval(policy, action) is gated


def test_two_person_actions_need_two_approvers() -> None:
    policy = Policy()
    rds = ActionRequest(incident_id="i", action="modify_db_instance_class", target="rds:db")
    rollback = ActionRequest(incident_id="i", action="rollback_deployment", target="svc")
    outage = rollback.model_copy(update={"two_person": True})
    assert approvals_needed(policy, rds) == 2
    assert approvals_needed(policy, rollback) == 1
    assert approvals_needed(policy, outage) == 2


def test_idempotency_key_is_incident_action_target() -> None:
    req = ActionRequest(incident_id="inc-7", action="rollback_deployment", target="railway:api")
    assert req.idempotency_key == "inc-7:rollback_deployment:railway:api"


def test_code_is_bound_to_run_action_approver_and_expiry() -> None:
    code = one_time_code(SECRET, "run-1", "rollback_deployment", "alice", EXPIRES)
    assert len(code) == 8 and code.isdigit()
    now = EXPIRES - timedelta(minutes=1)
    ok = code_matches(SECRET, code, "run-1", "rollback_deployment", "alice", EXPIRES, now)
    assert ok
    assert code_matches(SECRET, code, "run-1", "rollback_deployment", "Alice", EXPIRES, now)
    for run, action, who in [
        ("run-2", "rollback_deployment", "alice"),
        ("run-1", "failover_db", "alice"),
        ("run-1", "rollback_deployment", "bob"),
    ]:
        assert not code_matches(SECRET, code, run, action, who, EXPIRES, now)
    assert not code_matches(
        b"other-secret", code, "run-1", "rollback_deployment", "alice", EXPIRES, now
    )
    late = EXPIRES + timedelta(seconds=1)
    assert not code_matches(SECRET, code, "run-1", "rollback_deployment", "alice", EXPIRES, late)


def test_an_approval_code_is_bound_to_the_exact_target_and_parameters() -> None:
    """A rerun that would now act differently (another rollback target) needs a new approval."""
    from flows.approval import scope

    def rollback(deployment: str, target: str = "railway:api") -> ActionRequest:
        return ActionRequest(
            incident_id="inc-7",
            action="rollback_deployment",
            target=target,
            params={"deployment_id": deployment},
        )

    approved = rollback("dep-good")
    code = one_time_code(SECRET, "run-1", scope(approved), "alice", EXPIRES)
    now = EXPIRES - timedelta(minutes=1)
    assert code_matches(SECRET, code, "run-1", scope(rollback("dep-good")), "alice", EXPIRES, now)
    for other in (rollback("dep-other"), rollback("dep-good", target="railway:worker")):
        assert scope(other) != scope(approved)
        assert not code_matches(SECRET, code, "run-1", scope(other), "alice", EXPIRES, now)


@pytest.mark.parametrize(
    ("approve", "approver", "allowed", "already", "code_ok", "problem"),
    [
        (True, "alice", ["alice", "bob"], [], True, None),
        (True, "alice", [], [], None, None),
        (False, "alice", ["alice"], [], True, "rejected by alice"),
        (True, "mallory", ["alice", "bob"], [], True, "not on the Policy's approver list"),
        (True, "alice", ["alice", "bob"], ["alice"], True, "different approver"),
        (True, "bob", ["alice", "bob"], [], False, "did not match"),
        (True, "  ", [], [], None, "without an approver name"),
    ],
)
def test_answer_rules(
    approve: bool,
    approver: str,
    allowed: list[str],
    already: list[str],
    code_ok: bool | None,
    problem: str | None,
) -> None:
    answer = ApprovalInput(approve=approve, approver=approver, reason="r")
    got = check_answer(answer, allowed=allowed, already=already, code_ok=code_ok)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_approver_field_is_required_in_the_form() -> None:
    schema = ApprovalInput.model_json_schema()
    assert "approver" in schema["required"]
    assert "approve" not in schema.get("required", [])


def test_request_description_shows_seen_action_why_and_rejection() -> None:
    req = ActionRequest(
        incident_id="inc-9",
        action="rollback_deployment",
        target="railway:api",
        params={"deployment_id": "dep_good"},
        reason="error rate 12% > 5% after deploy dep_bad",
        evidence={"error_rate_pct": 12.3},
    )
    text = describe_request(
        req,
        action_class="destructive",
        expires_at=EXPIRES,
        approver_number=1,
        approvers_needed=2,
        require_code=True,
    )
    for part in (
        "rollback_deployment",
        "railway:api",
        "dep_good",
        "error_rate_pct",
        "12.3",
        "If rejected",
        "PagerDuty",
        "approver 1 of 2",
        "one-time code",
        "re-checks",
    ):
        assert part in text


def test_log_records_mask_registered_secrets(caplog: pytest.LogCaptureFixture) -> None:
    redact.install()
    redact.register(SecretStr("postgresql://app:Sup3rS3cretPw@db:5432/app"))
    redact.register("xoxb-slack-token-123456")
    logger = logging.getLogger("runbook.unit")
    with caplog.at_level(logging.INFO, logger="runbook.unit"):
        logger.info("connecting to %s", "postgresql://app:Sup3rS3cretPw@db:5432/app")
        logger.info("token xoxb-slack-token-123456 and password Sup3rS3cretPw")
    assert len(caplog.records) == 2
    assert "Sup3rS3cretPw" not in caplog.text
    assert "xoxb-slack-token-123456" not in caplog.text
    assert redact.MASK in caplog.text


def test_non_digit_codes_never_match_and_never_crash() -> None:
    now = EXPIRES - timedelta(minutes=1)
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in "12345678")  # non-ASCII digits
    for bad in (fullwidth, "abcdefgh", "", "1234 567x"):
        assert not code_matches(SECRET, bad, "run-1", "rollback_deployment", "alice", EXPIRES, now)
