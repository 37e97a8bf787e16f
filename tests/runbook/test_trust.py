"""The trust contracts, tried as an attacker and as an on-call engineer would: forged or
self-given approvals, weakened Policy blocks, broken channels, the kill switch, crashes. Each
must fail safe (no act) and tell a human (PagerDuty, else Slack)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from blocks.policy import Policy
from flows.notifications import flush_outbox
from runbook import ledger, opsdb
from runbook.actions import ActionClass, ActionRequest
from runbook.approval import scope
from runbook.safety import Approval, perform
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.e2e.test_incident_flows import runbook_cli
from tests.flows.safety_flow import safety_rollback
from tests.runbook.test_safety_core import (
    code_from_slack,
    incident,
    resume,
    rollbacks,
    start_gated,
    waiting_gate,
)

pytestmark = pytest.mark.integration

DEAD = "http://127.0.0.1:9"  # nothing listens there: connection refused


def pages(sb: SandboxHandle, since: int = 0) -> list[str]:
    return [json.dumps(p) for p in sb.sink("pagerduty")[since:]]


def slack(sb: SandboxHandle, since: int = 0) -> list[str]:
    return [str(m.get("text", "")) for m in sb.sink("slack")[since:]]


async def eventually(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.2)


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


async def test_forged_resume_with_a_wrong_code_does_not_act_and_pages(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-forged")
    paged_before = len(sb.sink("pagerduty"))
    await resume(gate, approve=True, approver="alice", code="12345678", reason="trust me")
    result = await running
    assert result["status"] == "rejected"
    assert "did not match" in result["detail"]
    assert rollbacks(sb) == before
    assert any("Refused an approval" in p for p in pages(sb, paged_before))


async def test_policy_block_weakened_through_the_api_is_ignored(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone with Prefect API access saves a Policy that drops codes, lists themselves and
    auto-approves: the acting process keeps its floor, waits for a coded approval and refuses
    the intruder's answer."""
    sb = platform_env
    env(monkeypatch, RUNBOOK_ENVIRONMENT=f"weakened-{uuid.uuid4().hex[:6]}")
    await Policy(
        approvers=["mallory", "alice"],
        require_code=False,
        auto_approve=True,
        action_classes={"rollback_deployment": "safe"},
    ).asave(get_settings().environment, overwrite=True)
    running, gate, before = await start_gated(sb, pg_url, "-weakened")  # it waits: no auto
    paged_before = len(sb.sink("pagerduty"))
    await resume(gate, approve=True, approver="mallory", code="", reason="I approve myself")
    result = await running
    assert result["status"] == "rejected"
    assert "mallory is not on the Policy's approver list" in result["detail"]
    assert rollbacks(sb) == before
    assert any("Refused an approval" in p for p in pages(sb, paged_before))


async def test_policy_block_out_of_bounds_is_refused_and_paged(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    env(monkeypatch, RUNBOOK_ENVIRONMENT=f"bounds-{uuid.uuid4().hex[:6]}")
    # saved without validation, as a raw API write could
    await Policy.model_construct(max_replicas=500, approval_timeout_s=1).asave(
        get_settings().environment, overwrite=True
    )
    policy = await Policy.resolve()
    assert policy.max_replicas == 5, "the floor is used"
    assert any("max_replicas" in p for p in policy.problems)
    paged_before = len(sb.sink("pagerduty"))
    from flows.llm_provider import llm_provider

    await llm_provider()
    assert any("Policy block refused" in p and "max_replicas" in p for p in pages(sb, paged_before))


async def test_approval_of_one_scope_is_not_reused_for_another_or_when_stale(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    inc = incident()
    first = ActionRequest(
        incident_id=inc, action="rollback_deployment", target="railway:scope", params={"to": "A"}
    )
    other = first.model_copy(update={"params": {"to": "B"}})
    async with await opsdb.connect() as conn:
        await ledger.ensure(
            conn, first, ActionClass.DESTRUCTIVE, status="intent", dry_run=False, flow_run_id=None
        )
        await ledger.mark(
            conn,
            first.idempotency_key,
            "approved",
            approvers=["alice"],
            approved_scope=scope(first),
        )
    asked: list[dict[str, Any]] = []

    async def approve(req: ActionRequest) -> Approval:
        asked.append(req.params)
        return Approval(approved=False, reason="not this one")

    async def page(summary: str, details: dict[str, Any]) -> bool:
        return True

    async def act() -> dict[str, Any]:
        raise AssertionError("must not act")

    policy = await Policy.resolve()
    outcome = await perform(
        other, policy=policy, act=act, dry_run=False, approve=approve, page=page
    )
    assert asked == [{"to": "B"}], "scope B asks again"
    assert outcome.status == "rejected"
    async with await opsdb.connect() as conn:  # approved for A again, but 2 hours ago
        await ledger.mark(
            conn,
            first.idempotency_key,
            "approved",
            approvers=["alice"],
            approved_scope=scope(first),
        )
        await conn.execute(
            "UPDATE runbook.actions SET approved_at = now() - interval '2 hours'"
            " WHERE idempotency_key = %s",
            (first.idempotency_key,),
        )
    outcome = await perform(
        first, policy=policy, act=act, dry_run=False, approve=approve, page=page
    )
    assert asked[-1] == {"to": "A"}, "a stale approval asks again"
    assert outcome.status == "rejected"


async def test_the_requester_cannot_approve_their_own_run(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-self", requested_by="alice")
    assert not [t for t in slack(sb) if t.startswith("alice:") and gate in t], "no code for alice"
    await resume(gate, approve=True, approver="alice", code="00000000", reason="my own run")
    result = await running
    assert result["status"] == "rejected"
    assert "asked for this run" in result["detail"]
    assert rollbacks(sb) == before


async def test_approver_without_a_channel_fails_closed_and_pages(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    hook = sb.env["RUNBOOK_SLACK_WEBHOOK_URL"]
    env(monkeypatch, RUNBOOK_APPROVER_WEBHOOKS=json.dumps({"alice": hook}))  # none for bob
    sb.inject("bad-deploy")
    before, paged_before, slack_before = (
        rollbacks(sb),
        len(sb.sink("pagerduty")),
        len(sb.sink("slack")),
    )
    result = await safety_rollback(incident(), target_suffix="-nochannel")
    assert result["status"] == "rejected"
    assert "approver bob has no channel of their own" in result["detail"]
    assert rollbacks(sb) == before
    assert any("bob has no channel" in p for p in pages(sb, paged_before))
    assert not any("bob:" in t for t in slack(sb, slack_before)), "never the team channel"


async def test_slack_down_during_an_approval_pages_the_request_and_still_waits(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    env(monkeypatch, RUNBOOK_SLACK_WEBHOOK_URL=f"{DEAD}/slack")  # codes still reach alice
    paged_before = len(sb.sink("pagerduty"))
    running, gate, before = await start_gated(sb, pg_url, "-slackdown")
    await eventually(
        lambda: any("Slack did not take the approval request" in p for p in pages(sb, paged_before))
    )
    assert any(gate in p for p in pages(sb, paged_before)), "the page links the waiting run"
    assert not running.done() and rollbacks(sb) == before, "still waiting for a valid answer"
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="seen on PagerDuty")
    result = await running
    assert result["status"] == "done"
    assert rollbacks(sb) == before + 1


async def test_revoked_approver_webhook_pages_and_the_other_approver_can_still_approve(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    hook = sb.env["RUNBOOK_SLACK_WEBHOOK_URL"]
    revoked = hook.rsplit("/", 1)[0] + "/revoked"
    env(monkeypatch, RUNBOOK_APPROVER_WEBHOOKS=json.dumps({"alice": revoked, "bob": hook}))
    paged_before = len(sb.sink("pagerduty"))
    running, gate, before = await start_gated(sb, pg_url, "-revoked")
    await eventually(
        lambda: any("no code could be delivered to alice" in p for p in pages(sb, paged_before))
    )
    code = code_from_slack(sb, "bob", gate)
    await resume(gate, approve=True, approver="bob", code=code, reason="alice unreachable")
    assert (await running)["status"] == "done"
    assert rollbacks(sb) == before + 1


async def test_pagerduty_down_falls_back_to_slack_and_the_outbox_delivers_later(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    good = sb.env["RUNBOOK_PAGERDUTY_EVENTS_URL"]
    env(monkeypatch, RUNBOOK_PAGERDUTY_EVENTS_URL=f"{DEAD}/v2/enqueue")
    from flows.notifications import page

    marker = f"trust-outbox-{uuid.uuid4().hex[:6]}"
    slack_before, paged_before = len(sb.sink("slack")), len(sb.sink("pagerduty"))
    accepted = await page(f"{marker}: database down", {"incident": marker})
    assert accepted is False, "not marked paged when PagerDuty did not accept it"
    assert any("PAGE NOT DELIVERED" in t and marker in t for t in slack(sb, slack_before))
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT status FROM runbook.notifications WHERE channel = 'pagerduty' AND body LIKE %s",
            (f"{marker}%",),
        )
        assert [r[0] for r in await cur.fetchall()] == ["pending"], "kept for a retry"
        # a sender restarting later: the row is due again
        await conn.execute(
            "UPDATE runbook.notifications SET next_attempt_at = now() WHERE body LIKE %s",
            (f"{marker}%",),
        )
    env(monkeypatch, RUNBOOK_PAGERDUTY_EVENTS_URL=good)  # PagerDuty is back
    await flush_outbox()
    assert any(marker in p for p in pages(sb, paged_before)), "delivered by the outbox"
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT status FROM runbook.notifications WHERE channel = 'pagerduty' AND body LIKE %s",
            (f"{marker}%",),
        )
        assert [r[0] for r in await cur.fetchall()] == ["sent"]


async def test_a_flow_that_fails_mid_run_pages_once_with_its_link(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    env(monkeypatch, RUNBOOK_RAILWAY_TOKEN="revoked-token")  # every Railway call is refused
    from flows.llm_provider import llm_provider

    paged_before = len(sb.sink("pagerduty"))
    state = await llm_provider(return_state=True)
    assert state.is_failed()
    failed = [p for p in pages(sb, paged_before) if "llm-provider run" in p]
    assert len(failed) == 1, failed
    assert "/v2/runs/flow-run/" in failed[0] and "Last step" in failed[0]


async def test_kill_switch_holds_every_act_pages_and_resume_lets_it_act(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    env(monkeypatch, RUNBOOK_AUTO_APPROVE="true", RUNBOOK_ALLOW_AUTO_APPROVE="1")
    paused = runbook_cli("pause", "--reason", "game day: hands off", "--as", "carol")
    assert paused.returncode == 0, paused.stderr
    try:
        status = runbook_cli("status")
        assert "PAUSED (all targets) by carol" in status.stdout
        assert "PAUSED" in runbook_cli("approvals").stdout
        sb.inject("bad-deploy")
        before, paged_before = rollbacks(sb), len(sb.sink("pagerduty"))
        inc = incident()
        result = await safety_rollback(inc, target_suffix="-killswitch")
        assert result["status"] == "held"
        assert rollbacks(sb) == before, "nothing mutated"
        assert any("kill switch" in p for p in pages(sb, paged_before))
        async with await opsdb.connect() as conn:
            entries = await ledger.entries(conn, inc)
        assert [e.status for e in entries] == ["held"]
    finally:
        resumed = runbook_cli("resume")
        assert resumed.returncode == 0, resumed.stderr
    again = await safety_rollback(inc, target_suffix="-killswitch")
    assert again["status"] == "done"
    assert rollbacks(sb) == before + 1


async def test_every_mutation_counts_against_the_hourly_budget(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    env(monkeypatch, RUNBOOK_MUTATION_BUDGET_PER_HOUR="2")
    policy = await Policy.resolve()
    acted: list[str] = []
    paged: list[str] = []

    async def act() -> dict[str, Any]:
        acted.append("switch")
        return {}

    async def page(summary: str, details: dict[str, Any]) -> bool:
        paged.append(summary)
        return True

    async def approve(_: ActionRequest) -> Approval:
        raise AssertionError("safe acts need no approval")

    target = f"railway:budget-{uuid.uuid4().hex[:6]}"
    statuses = []
    for _ in range(3):
        req = ActionRequest(incident_id=incident(), action="switch_model", target=target)
        out = await perform(req, policy=policy, act=act, dry_run=False, approve=approve, page=page)
        statuses.append(out.status)
    assert statuses == ["done", "done", "refused"]
    assert len(acted) == 2
    assert paged and "budget spent" in paged[0]


async def test_a_rejected_rollback_never_reads_as_rolled_back(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    """§1 after a human rejects the rollback: the summary says it was not done."""
    sb = platform_env
    from flows.high_error_rate import high_error_rate

    sb.inject("bad-deploy")
    await asyncio.sleep(20)  # a bad deploy needs ~20 s of the recent window to cross 5 %
    slack_before = len(sb.sink("slack"))
    running = asyncio.create_task(high_error_rate(verify_window_s=30))
    async with await opsdb.connect() as conn:
        for _ in range(300):
            row = await (
                await conn.execute(
                    "SELECT incident_id FROM runbook.approvals WHERE action ="
                    " 'rollback_deployment' AND status = 'waiting' ORDER BY requested_at DESC"
                )
            ).fetchone()
            if row or running.done():
                break
            await asyncio.sleep(0.2)
    if not row:
        ended = running.result() if running.done() else None
        running.cancel()
        raise AssertionError(f"the rollback never asked for approval: {ended!r}")
    gate = await waiting_gate(pg_url, row[0])
    await resume(gate, approve=False, approver="bob", reason="not during the sale")
    result = await running
    assert result.action_status == "rejected"
    assert "rolled back" not in result.summary and "NOT done" in result.summary
    summaries = [t for t in slack(sb, slack_before) if "Timeline:" in t]
    assert summaries and all("rolled back" not in t for t in summaries)


async def test_a_scheduled_run_that_finds_nothing_posts_nothing(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    from flows.llm_provider import llm_provider

    slack_before = len(sb.sink("slack"))
    result = await llm_provider()
    assert result.decision == "none"
    assert slack(sb, slack_before) == []


async def test_railway_answer_lost_after_apply_mutates_once_and_is_reconciled(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§3 switches to the fallback; Railway applies the variable change but the answer never
    comes back. The switch is sent once, and the ledger learns from the platform it happened."""
    sb = platform_env
    env(monkeypatch, RUNBOOK_RAILWAY_TIMEOUT_S="2")
    from flows.llm_provider import llm_provider

    sb.inject("llm-outage")
    sb.inject("railway-timeout-after-apply", hold_s=10, on="mutation")
    before = sum(1 for e in sb.journal() if e["operation"] == "variableCollectionUpsert")
    result = await llm_provider()
    upserts = [e for e in sb.journal() if e["operation"] == "variableCollectionUpsert"]
    assert len(upserts) == before + 1, "exactly one mutation reached Railway"
    assert result.action == "switch_model" and result.action_status == "done", result
    assert sb.state()["DEFAULT_MODEL"] == "gpt-4o-mini"
    async with await opsdb.connect() as conn:
        entries = await ledger.entries(conn, result.incident_id)
    assert entries[-1].status == "done" and entries[-1].outcome == {"reconciled": True}
