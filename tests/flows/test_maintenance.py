"""Maintenance windows against the sandbox, our own intake and a real Prefect server, with an
injected clock (a flow parameter): the Sunday window's five steps in order, a failing step, a
window that runs out, alerts suppressed only while the window is open, emergency maintenance."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from blocks.policy import Policy
from flows.emergency_maintenance import emergency_maintenance
from flows.maintenance import maintenance_notice, scheduled_maintenance
from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.flows.maintenance_support import (
    defer_resize,
    in_maintenance,
    own_intake,
    pages,
    post_alert,
    railway_and_rds,
    sunday,
    watch_env,
)
from tests.intake.intake_harness import IntakeProcess, generic_alert
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
__all__ = ["own_intake", "watch_env"]  # the fixtures, imported for these tests
# the sandbox's app database is shared by the session's tests: its migrations stay db-migrate's
UPDATES = ["redeploy", "rds_pending", "vacuum"]


async def updates_policy(**fields: Any) -> None:
    """This test environment's Policy block: the window's updates (and anything else given)."""
    budgets = {"mutation_budget_per_hour": 100, "destructive_budget_per_hour": 100}
    await Policy(**{"maintenance_steps": UPDATES, **budgets, **fields}).asave(
        get_settings().environment, overwrite=True
    )


async def auto_approve(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment whose floor allows auto-approval and whose Policy uses it (staging)."""
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    get_settings.cache_clear()
    await updates_policy(auto_approve=True)


async def window_row(incident_id: str) -> tuple[datetime, datetime | None, str]:
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT ends_at, closed_at, kind FROM runbook.maintenance_windows"
            " WHERE incident_id = %s",
            (incident_id,),
        )
        row = await cur.fetchone()
    assert row is not None, "the window row was written"
    return row[0], row[1], row[2]


async def approvals_of(incident_id: str) -> int:
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM runbook.approvals WHERE incident_id = %s", (incident_id,)
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_the_sunday_window_runs_its_five_steps_in_order_with_the_notice_approval(
    prefect_server: str, watch_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = watch_env
    # a rehearsal at a made-up Sunday: the worker's environment lets `now` count for the
    # notice's approval (without it, that approval only counts in the real window)
    monkeypatch.setenv("RUNBOOK_ALLOW_CLOCK_OVERRIDE", "1")
    get_settings.cache_clear()
    await updates_policy()
    defer_resize(sb, "db.t3.large")  # a resize deferred to the maintenance window
    window = sunday(1)
    page_before, mail_before = len(sb.sink("statuspage")), len(sb.sink("email"))
    # Friday 02:00: the notice, and the approval of the exact steps, given now
    notice = asyncio.create_task(maintenance_notice(now=window - timedelta(hours=48)))
    gate = await waiting_gate(pg_url, action="approve_maintenance_plan", running=notice)
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="routine window")
    noticed = await notice
    assert "approved ahead by alice" in noticed.summary, noticed.summary
    scheduled = [e for e in sb.sink("statuspage")[page_before:] if e["status"] == "scheduled"]
    assert len(scheduled) == 1
    assert (scheduled[0]["scheduled_for"], scheduled[0]["scheduled_until"]) == (
        f"{window:%Y-%m-%d}T02:00:00Z",
        f"{window:%Y-%m-%d}T04:00:00Z",
    )
    assert any("Scheduled maintenance" in m["subject"] for m in sb.sink("email")[mail_before:])

    # Sunday 02:00: the window
    before = len(sb.journal())
    result = await scheduled_maintenance(now=window)
    assert result.decision == "completed", result.summary
    assert railway_and_rds(sb, before) == [
        "MM=true",
        "deploymentRedeploy",
        "ModifyDBInstance",
        "MM=false",
    ]
    assert sb.state()["rds"]["instance_class"] == "db.t3.large"
    assert not in_maintenance(sb)
    assert await approvals_of(result.incident_id) == 0, "approved at notice time: nobody woken"
    statuses = [e["status"] for e in sb.sink("statuspage")[page_before:]]
    assert statuses == ["scheduled", "in_progress", "completed"]
    _, closed, kind = await window_row(result.incident_id)
    assert closed is not None and kind == "scheduled"
    slack = " ".join(str(m.get("text", "")) for m in sb.sink("slack"))
    assert "Scheduled maintenance starts now" in slack and "completed" in slack

    # the same window started again (a replay through the Prefect API): the notice's approval
    # was used once; the redeploy asks a human, who says no, and nothing is redeployed
    before = len(sb.journal())
    again = asyncio.create_task(scheduled_maintenance(now=window))
    gate = await waiting_gate(pg_url, action="redeploy_service", running=again)
    await resume(gate, approve=False, approver="alice", reason="already done this window")
    await again
    assert "deploymentRedeploy" not in railway_and_rds(sb, before)


async def test_a_failing_step_restores_service_first_and_pages(
    prefect_server: str, watch_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = watch_env
    await auto_approve(monkeypatch)
    # Railway applies the next two mutations and answers 500: the maintenance-mode switch is
    # found on the platform (reconciled), the redeploy's outcome stays unknown → failed
    sb.inject("railway-500", count=2, on="mutation")
    before, paged_before = len(sb.journal()), len(sb.sink("pagerduty"))
    result = await scheduled_maintenance(now=sunday(2))
    assert result.decision == "failed", result.summary
    assert railway_and_rds(sb, before) == ["MM=true", "deploymentRedeploy", "MM=false"]
    assert not in_maintenance(sb), "service restored"
    assert "service restored first" in result.summary
    assert any("service restored first" in p for p in pages(sb, paged_before))
    _, closed, _ = await window_row(result.incident_id)
    assert closed is not None


async def test_running_out_of_window_skips_the_rest_restores_service_and_pages(
    prefect_server: str, watch_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = watch_env
    await auto_approve(monkeypatch)
    defer_resize(sb, "db.t3.large")
    before, paged_before = len(sb.journal()), len(sb.sink("pagerduty"))
    # 03:30: the redeploy (15 min + 10 min to restore) fits, the RDS change (30 min) does not
    result = await scheduled_maintenance(now=sunday(3, hour=3, minute=30))
    assert result.decision == "out_of_time", result.summary
    assert railway_and_rds(sb, before) == ["MM=true", "deploymentRedeploy", "MM=false"]
    assert sb.state()["rds"]["pending_class"] == "db.t3.large", "left for the next window"
    assert not in_maintenance(sb)
    assert "skipped rds_pending, vacuum" in result.summary
    assert any("ran out of window" in p for p in pages(sb, paged_before))


async def test_an_alert_during_the_window_is_suppressed_and_one_after_it_is_not(
    prefect_server: str,
    watch_env: SandboxHandle,
    own_intake: IntakeProcess,
    pg_url: str,
) -> None:
    sb = watch_env
    await updates_policy(maintenance_steps=["redeploy"])
    window = asyncio.create_task(scheduled_maintenance(now=sunday(4)))
    # no notice: the redeploy asks for its approval in the window (the window is open meanwhile)
    gate = await waiting_gate(pg_url, action="redeploy_service", running=window)
    assert in_maintenance(sb)
    tag = uuid.uuid4().hex[:8]
    during = post_alert(
        own_intake,
        generic_alert("HighErrorRate", dedup_key=f"during-{tag}", labels={"target": f"t-{tag}"}),
    )
    assert during["status"] == "suppressed", during
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="go ahead")
    result = await window
    assert result.decision == "completed", result.summary
    after = post_alert(
        own_intake,
        generic_alert("HighErrorRate", dedup_key=f"after-{tag}", labels={"target": f"u-{tag}"}),
    )
    assert after["status"] == "new", after


async def _report(flow_run_id: Any) -> str:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="maintenance-report-")),
            limit=50,
        )
    mine = [a for a in found if a.flow_run_id == flow_run_id]
    assert len(mine) == 1
    return str(mine[0].data)


async def test_emergency_maintenance_leaves_an_incident_report_and_a_resolved_status_entry(
    prefect_server: str, watch_env: SandboxHandle
) -> None:
    sb = watch_env
    page_before, mail_before = len(sb.sink("statuspage")), len(sb.sink("email"))
    started = datetime.now(UTC)
    state = await emergency_maintenance(
        reason="index bloat slows every reply", steps=["vacuum"], return_state=True
    )
    result = await state.result()
    assert result.decision == "completed", result.summary
    entries = sb.sink("statuspage")[page_before:]
    assert [e["status"] for e in entries] == ["identified", "resolved"]
    assert set(entries[0]["components"].values()) == {"under_maintenance"}
    assert set(entries[-1]["components"].values()) == {"operational"}
    assert any("Emergency maintenance" in m["subject"] for m in sb.sink("email")[mail_before:])
    ends, closed, kind = await window_row(result.incident_id)
    assert kind == "emergency" and closed is not None
    assert ends - started < timedelta(minutes=1), "the window ended with the work"
    report = await _report(state.state_details.flow_run_id)
    assert "index bloat slows every reply" in report
    for part in ("## Timeline", "## What changed", "**Duration:**", "VACUUM (ANALYZE)"):
        assert part in report, part
    assert not in_maintenance(sb)
