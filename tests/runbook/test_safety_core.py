"""Safety core against the sandbox: approvals, exactly-once, dry-run, budget, timeout, crash."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.flows.safety_flow import safety_rollback

pytestmark = pytest.mark.integration


def rollbacks(sb: SandboxHandle) -> int:
    return sum(1 for e in sb.journal() if e["operation"] == "deploymentRollback")


def incident() -> str:
    return f"inc-{uuid.uuid4().hex[:8]}"


async def waiting_gate(
    pg_url: str,
    incident_id: str | None = None,
    timeout: float = 60,
    action: str | None = None,
    running: asyncio.Task[Any] | None = None,
) -> str:
    """The paused approval-gate run waiting for this incident (or this action): waits until it
    pauses. Given the flow's `running` task, fails at once with its outcome if it ends first."""
    deadline = time.monotonic() + timeout
    column, value = ("incident_id", incident_id) if incident_id else ("action", action)
    async with await opsdb.connect(pg_url) as conn:  # migrated, like the flow's own
        while time.monotonic() < deadline:
            if running is not None and running.done():
                ended = running.exception() or running.result()
                raise AssertionError(f"the flow ended before an approval gate paused: {ended!r}")
            cur = await conn.execute(
                f"SELECT flow_run_id FROM runbook.approvals WHERE {column} = %s"
                " AND status = 'waiting' ORDER BY requested_at DESC LIMIT 1",
                (value,),
            )
            row = await cur.fetchone()
            if row:
                async with get_client() as client:
                    run = await client.read_flow_run(uuid.UUID(row[0]))
                if run.state and run.state.is_paused():
                    return str(row[0])
            await asyncio.sleep(0.2)
    raise AssertionError("the approval gate never paused")


def code_from_slack(sb: SandboxHandle, approver: str, run_id: str) -> str:
    """The code a human would read in Slack."""
    for message in reversed(sb.sink("slack")):
        text = str(message.get("text", message))
        if text.startswith(f"{approver}:") and run_id in text:
            found = re.search(r"\bis (\d{8})\b", text)
            assert found, text
            return found.group(1)
    raise AssertionError(f"no code for {approver} in Slack")


async def start_gated(
    sb: SandboxHandle, pg_url: str, suffix: str, **flow_args: Any
) -> tuple[asyncio.Task[dict[str, Any]], str, int]:
    """A bad deploy, and a rollback flow paused at its approval gate: (run, gate id, rollbacks)."""
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc = incident()
    running = asyncio.create_task(safety_rollback(inc, target_suffix=suffix, **flow_args))
    return running, await waiting_gate(pg_url, inc, running=running), before


async def resume(run_id: str, **run_input: Any) -> None:
    async with get_client() as client:
        result = await client.resume_flow_run(uuid.UUID(run_id), run_input=run_input)
    assert result.status.value == "ACCEPT", result.details


async def test_approve_with_code_acts_once_and_second_resume_changes_nothing(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-approve")
    slack_text = " ".join(str(m) for m in sb.sink("slack"))
    assert f"/v2/runs/flow-run/{gate}" in slack_text, "Slack has the UI link"
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="bad deploy")
    result = await running
    assert result["status"] == "done", result
    assert result["approvers"] == ["alice"]
    assert rollbacks(sb) == before + 1
    async with get_client() as client:
        again = await client.resume_flow_run(
            uuid.UUID(gate),
            run_input={"approve": True, "approver": "alice", "code": code, "reason": "x"},
        )
    assert again.status.value != "ACCEPT"
    await asyncio.sleep(1)
    assert rollbacks(sb) == before + 1


async def test_reject_takes_no_action_and_records_reason(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-reject")
    await resume(gate, approve=False, approver="bob", code="", reason="investigating first")
    result = await running
    assert result["status"] == "rejected"
    assert "investigating first" in result["detail"]
    assert rollbacks(sb) == before


async def test_wrong_code_takes_no_action_and_says_why(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-wrongcode")
    await resume(gate, approve=True, approver="alice", code="00000000", reason="go")
    result = await running
    assert result["status"] == "rejected"
    assert "code for alice did not match" in result["detail"]
    assert rollbacks(sb) == before
    pages = sb.sink("pagerduty")
    assert any("did not match" in str(p) for p in pages), "a wrong code pages a human"


async def test_approver_not_on_the_list_takes_no_action(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-mallory")
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="mallory", code=code, reason="trust me")
    result = await running
    assert result["status"] == "rejected"
    assert "not on the Policy's approver list" in result["detail"]
    assert rollbacks(sb) == before


async def test_timeout_ends_not_approved_and_pages(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_APPROVAL_TIMEOUT_S", "3")
    get_settings.cache_clear()
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    pages_before = len(sb.sink("pagerduty"))
    inc = incident()
    state = await safety_rollback(inc, target_suffix="-timeout", return_state=True)
    assert state.is_completed(), "the parent flow completes in a clear state"
    result = await state.aresult()
    assert result["status"] == "rejected"
    assert "no approval within 3 s" in result["detail"]
    assert rollbacks(sb) == before
    pages = sb.sink("pagerduty")[pages_before:]
    assert any("not given" in str(p) and inc in str(p) for p in pages), pages


async def test_symptom_gone_after_approval_means_no_action(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-gone", symptom_gone_after_approval=True)
    code = code_from_slack(sb, "bob", gate)
    await resume(gate, approve=True, approver="bob", code=code, reason="ok")
    result = await running
    assert result["status"] == "skipped"
    assert "gone" in result["detail"]
    assert rollbacks(sb) == before


async def test_two_person_action_needs_two_different_approvers(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-two", two_person=True)
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="first")
    await asyncio.sleep(1.5)
    assert rollbacks(sb) == before, "one approval is not enough"
    async with await opsdb.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT incident_id FROM runbook.approvals WHERE flow_run_id = %s", (gate,)
        )
        row = await cur.fetchone()
    assert row is not None
    gate2 = await waiting_gate(pg_url, row[0])  # paused again, for the second person
    assert gate2 == gate
    code_b = code_from_slack(sb, "bob", gate)
    await resume(gate, approve=True, approver="bob", code=code_b, reason="second")
    result = await running
    assert result["status"] == "done"
    assert result["approvers"] == ["alice", "bob"]
    assert rollbacks(sb) == before + 1


async def test_dry_run_plans_only_journal_unchanged_ledger_planned(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    journal_before = len(sb.journal())
    inc = incident()
    result = await safety_rollback(inc, dry_run=True, target_suffix="-dry")
    assert result["status"] == "planned"
    assert len(sb.journal()) == journal_before, "dry run changed nothing on the platform"
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT status, dry_run FROM runbook.actions WHERE incident_id = %s",
            (f"dry-run:{inc}",),
        )
        assert await cur.fetchall() == [("planned", True)]
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"timeline-{inc}"]))
        )
    assert artifacts and "would rollback_deployment" in str(artifacts[-1].data)


async def test_duplicate_incident_and_concurrent_runs_act_once(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_AUTO_APPROVE", "true")  # staging-style policy: no human
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    get_settings.cache_clear()
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc = incident()
    first, second = await asyncio.gather(
        safety_rollback(inc, target_suffix="-dup"), safety_rollback(inc, target_suffix="-dup")
    )
    third = await safety_rollback(inc, target_suffix="-dup")  # re-delivered alert, later
    assert sorted([first["status"], second["status"]]) == ["already_done", "done"]
    assert third["status"] == "already_done"
    assert rollbacks(sb) == before + 1


async def test_task_retry_after_lost_response_acts_once(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_AUTO_APPROVE", "true")
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    get_settings.cache_clear()
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    result = await safety_rollback(incident(), target_suffix="-retry", lose_first_response=True)
    assert result["status"] == "done"
    assert "not repeated" in result["detail"]
    assert rollbacks(sb) == before + 1


async def test_budget_exhausted_refuses_and_pages(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_AUTO_APPROVE", "true")
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "2")  # the shipped default
    get_settings.cache_clear()
    for _ in range(2):  # 2 destructive actions per target per hour
        sb.inject("bad-deploy")
        assert (await safety_rollback(incident(), target_suffix="-budget"))["status"] == "done"
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    pages_before = len(sb.sink("pagerduty"))
    result = await safety_rollback(incident(), target_suffix="-budget")
    assert result["status"] == "refused"
    assert "budget spent" in result["detail"]
    assert rollbacks(sb) == before
    assert any("budget spent" in str(p) for p in sb.sink("pagerduty")[pages_before:])


def test_kill_9_between_act_and_record_then_rerun_acts_once(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc = incident()
    env = {**os.environ, "RUNBOOK_AUTO_APPROVE": "true", "RUNBOOK_ALLOW_AUTO_APPROVE": "1"}
    cmd = [sys.executable, "-m", "tests.flows.safety_flow", inc]
    proc = subprocess.Popen(
        [*cmd, "--slow-response"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while rollbacks(sb) == before and time.monotonic() < deadline:
        assert proc.poll() is None, "the flow process ended before acting"
        time.sleep(0.1)
    assert rollbacks(sb) == before + 1
    os.killpg(proc.pid, signal.SIGKILL)  # after the call, before the ledger records it
    proc.wait(10)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "'status': 'done'" in rerun.stdout and "not repeated" in rerun.stdout
    assert rollbacks(sb) == before + 1
