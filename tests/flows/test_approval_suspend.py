"""Approvals of deployment runs: the run suspends (its process exits) and reruns after the answer.

A served deployment of the safety-rollback flow plus the approval sweeper run in a subprocess,
as `runbook serve` does; the test drives it like an alert would (`run_deployment`) and answers
like an operator (Prefect's resume API, which is what the UI's Resume form and `runbook approve`
call).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from sandbox.handle import SandboxHandle
from tests.runbook.test_safety_core import code_from_slack, incident, rollbacks

pytestmark = pytest.mark.integration


@pytest.fixture
def served(
    prefect_server: str, platform_env: SandboxHandle, request: pytest.FixtureRequest
) -> Iterator[subprocess.Popen[bytes]]:
    """`safety-rollback/test` served from a subprocess, with the sweeper (timeout 4 s) unless
    the test is marked `no_sweeper` (timeout 12 s)."""
    no_sweeper = request.node.get_closest_marker("no_sweeper") is not None
    timeout = request.node.get_closest_marker("approval_timeout")
    env = {
        **os.environ,
        # without the sweeper, a test runs `runbook sweep` (≈ 1-3 s of imports on a busy
        # machine) inside the expiry and once after it: give it room
        "RUNBOOK_APPROVAL_TIMEOUT_S": str(timeout.args[0] if timeout else 12 if no_sweeper else 4),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # as `runbook serve` runs: the runs' story at INFO
    }
    extra = ["--no-sweeper"] if no_sweeper else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.flows.safety_flow", "--serve", *extra],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def start(suffix: str, **params: Any) -> tuple[str, str]:
    inc = incident()
    deadline = time.monotonic() + 60
    while True:  # the deployment exists once the served process has registered it
        try:
            run = await run_deployment(  # type: ignore[misc]
                "safety-rollback/test",
                parameters={"incident_id": inc, "target_suffix": suffix, **params},
                timeout=0,
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert isinstance(run, FlowRun)
    return inc, str(run.id)


async def state_of(run_id: str) -> tuple[str, str | None]:
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(run_id))
    assert run.state is not None
    return run.state.type.value, run.state.name


async def wait_for(run_id: str, names: set[str], timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, name = await state_of(run_id)
        if name in names:
            return name
        await asyncio.sleep(0.25)
    raise AssertionError(f"run {run_id} never reached {names}: {await state_of(run_id)}")


def approval_rows(pg_url: str, run_id: str) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT mode, status, approver FROM runbook.approvals WHERE flow_run_id = %s"
            " ORDER BY requested_at",
            (run_id,),
        ).fetchall()


def ledger_status(pg_url: str, inc: str) -> str:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT status FROM runbook.actions WHERE incident_id = %s", (inc,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def flow_processes(serve_pid: int) -> list[str]:
    """Command lines of the served process's children (a running flow run is one)."""
    out = subprocess.run(
        ["ps", "-o", "args=", "--ppid", str(serve_pid)], capture_output=True, text=True
    )
    return [line for line in out.stdout.splitlines() if line.strip()]


async def resume(run_id: str, **run_input: Any) -> str:
    async with get_client() as client:
        result = await client.resume_flow_run(uuid.UUID(run_id), run_input=run_input)
    return str(result.status.value)


@pytest.mark.approval_timeout(90)  # the answer comes after the process exit is checked
async def test_deployment_run_suspends_frees_its_process_and_acts_once_after_approval(
    served: subprocess.Popen[bytes], platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc, run_id = await start("-suspend")
    assert await wait_for(run_id, {"Suspended"}) == "Suspended"
    assert approval_rows(pg_url, run_id) == [("suspend", "waiting", None)], (
        "the run itself waits (no gate subflow)"
    )
    deadline = time.monotonic() + 15
    while flow_processes(served.pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert flow_processes(served.pid) == [], "a suspended run holds no process"
    assert rollbacks(sb) == before, "nothing before approval"
    slack = " ".join(str(m) for m in sb.sink("slack"))
    assert f"/v2/runs/flow-run/{run_id}" in slack

    code = code_from_slack(sb, "alice", run_id)
    assert await resume(run_id, approve=True, approver="alice", code=code, reason="ok") == "ACCEPT"
    assert await wait_for(run_id, {"Completed", "Failed", "Crashed"}) == "Completed"
    assert rollbacks(sb) == before + 1
    assert ledger_status(pg_url, inc) == "done"
    assert approval_rows(pg_url, run_id) == [("suspend", "approved", "alice")]
    again = await resume(run_id, approve=True, approver="alice", code=code, reason="twice")
    assert again != "ACCEPT", "a second resume changes nothing"
    await asyncio.sleep(2)
    assert rollbacks(sb) == before + 1


async def run_logs(run_id: str) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        return list(
            await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))
            )
        )


@pytest.mark.approval_timeout(60)
async def test_a_run_waiting_for_approval_reads_as_waiting_not_as_an_error(
    served: subprocess.Popen[bytes], platform_env: SandboxHandle, pg_url: str
) -> None:
    """The page links here: the Logs tab says who is asked and how, at INFO — and Prefect's own
    end-of-pass line for the suspension does not read as an ERROR."""
    sb = platform_env
    sb.inject("bad-deploy")
    inc, run_id = await start("-logs")
    await wait_for(run_id, {"Suspended"})
    deadline, logs = time.monotonic() + 30, []
    while time.monotonic() < deadline:  # the run's logs arrive in batches
        logs = await run_logs(run_id)
        if any(log.message.startswith("Finished in state Suspended") for log in logs):
            break
        await asyncio.sleep(0.5)
    assert [log.message for log in logs if log.level >= 40] == [], "nothing reads as an error"
    waiting = [log for log in logs if log.message.startswith("Waiting for approval 1/1")]
    assert waiting and waiting[0].level == 20, [log.message for log in logs]
    assert "alice" in waiting[0].message and "runbook approve" in waiting[0].message
    finished = [log for log in logs if log.message.startswith("Finished in state Suspended")]
    assert finished and finished[0].level == 20 and "waiting for approval" in finished[0].message

    code = code_from_slack(sb, "alice", run_id)
    assert await resume(run_id, approve=False, approver="alice", code=code, reason="over") == (
        "ACCEPT"
    )
    assert await wait_for(run_id, {"Completed", "Failed", "Crashed"}) == "Completed"
    assert ledger_status(pg_url, inc) == "rejected"


async def test_suspended_approval_timeout_ends_not_approved_and_pages(
    served: subprocess.Popen[bytes], platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    pages_before = len(sb.sink("pagerduty"))
    inc, run_id = await start("-suspend-timeout")
    await wait_for(run_id, {"Suspended"})
    # nobody answers: the sweeper does at the 4 s expiry, the run reruns and ends cleanly
    assert await wait_for(run_id, {"Completed", "Failed", "Crashed"}) == "Completed"
    assert ledger_status(pg_url, inc) == "rejected"
    assert approval_rows(pg_url, run_id) == [("suspend", "timed_out", None)]
    assert rollbacks(sb) == before
    pages = sb.sink("pagerduty")[pages_before:]
    assert any("no approval within 4 s" in str(p) and inc in str(p) for p in pages), pages


@pytest.mark.no_sweeper
@pytest.mark.approval_timeout(40)  # `runbook sweep` starts in seconds on a busy machine
async def test_runbook_sweep_command_times_out_expired_suspended_approvals(
    served: subprocess.Popen[bytes], platform_env: SandboxHandle, pg_url: str
) -> None:
    """Next to work-pool workers (no `runbook serve`), `runbook sweep` does the sweeper's job."""
    sb = platform_env
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc, run_id = await start("-sweep-cli")
    await wait_for(run_id, {"Suspended"})
    deadline_s = time.monotonic() + 40  # the approval (40 s) was recorded before it suspended
    early = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "sweep"], capture_output=True, text=True, timeout=60
    )
    assert early.returncode == 0, early.stderr
    assert "0 expired approval(s)" in early.stdout, "nothing expired yet: nothing answered"
    await asyncio.sleep(max(0.0, deadline_s - time.monotonic()) + 1)  # past the expiry
    assert (await state_of(run_id))[1] == "Suspended"
    swept = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "sweep"], capture_output=True, text=True, timeout=60
    )
    assert swept.returncode == 0, swept.stderr
    assert "1 expired approval(s) answered 'timed out'" in swept.stdout
    assert await wait_for(run_id, {"Completed", "Failed", "Crashed"}) == "Completed"
    assert ledger_status(pg_url, inc) == "rejected"
    assert rollbacks(sb) == before


@pytest.mark.approval_timeout(30)  # two answers and a rerun in between: room on a busy machine
async def test_suspended_two_person_action_needs_two_different_approvers(
    served: subprocess.Popen[bytes], platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    before = rollbacks(sb)
    inc, run_id = await start("-suspend-two", two_person=True)
    await wait_for(run_id, {"Suspended"})
    code_a = code_from_slack(sb, "alice", run_id)
    assert await resume(run_id, approve=True, approver="alice", code=code_a, reason="1") == "ACCEPT"
    deadline = time.monotonic() + 30
    while len(approval_rows(pg_url, run_id)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    await wait_for(run_id, {"Suspended"})
    assert rollbacks(sb) == before, "one approval is not enough"
    code_b = code_from_slack(sb, "bob", run_id)
    assert await resume(run_id, approve=True, approver="bob", code=code_b, reason="2") == "ACCEPT"
    assert await wait_for(run_id, {"Completed", "Failed", "Crashed"}) == "Completed"
    assert rollbacks(sb) == before + 1
    assert ledger_status(pg_url, inc) == "done"
    assert [r[2] for r in approval_rows(pg_url, run_id)] == ["alice", "bob"]
