"""The fault suite's harness: start a destructive flow (the `rollback` flow of Deployment
Procedures, after a bad deploy) directly or as a served deployment, SIGKILL its process at one
step, and read what the platform, the ledger, the timeline and Prefect say afterwards.

Nothing of ours is patched in the test process: the step is reached through the sandbox (a wire
fault that holds the platform's answer), the ops database (polling the ledger/timeline) or the
safety core's test-only pause (`RUNBOOK_TEST_PAUSE_AT`, inert unless set), set only in the
environment of the process that is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from sandbox.handle import SandboxHandle

PREFIX = "flt-"
DEPLOYMENT = "rollback/runbook"
IN_FLIGHT = frozenset({"intent", "approved", "started"})  # never where an incident may end
VERIFY_WINDOW_S = 30.0


def incident() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}"


def rollbacks(sb: SandboxHandle) -> int:
    """Rollbacks Railway performed (the sandbox journal: what the platform saw)."""
    return sum(1 for e in sb.journal() if e["operation"] == "deploymentRollback")


def child_env(pause: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # the platform call may be held in flight well past the moment the test kills it
        "RUNBOOK_RAILWAY_TIMEOUT_S": "60",
        **extra,
    }
    env.pop("RUNBOOK_TEST_PAUSE_AT", None)
    if pause:
        env["RUNBOOK_TEST_PAUSE_AT"] = pause
    return env


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(p) for p in out.stdout.split()]
    return kids + [d for k in kids for d in descendants(k)]


def flow_run_processes(serve_pid: int) -> list[int]:
    """The served flow runs' own processes (Prefect's runner starts each in a multiprocessing
    child of the serving process), not its helpers (the resource tracker)."""
    found = []
    for pid in descendants(serve_pid):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"spawn_main" in cmdline or b"prefect.engine" in cmdline:
                found.append(pid)
    return found


def sigkill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process, its process group and every descendant at once (the machine
    died): nothing of ours gets to run any shutdown code, Prefect is told nothing."""
    tree = [proc.pid, *descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(20)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End a process this test started (terminate, then kill)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        sigkill_tree(proc)


async def until(check: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# -- the ops database ------------------------------------------------------------------------
def ledger_rows(pg_url: str, inc: str) -> list[dict[str, Any]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT status, flow_run_id, verified, outcome, attempts FROM runbook.actions"
            " WHERE incident_id = %s ORDER BY created_at",
            (inc,),
        ).fetchall()
    return [
        {"status": r[0], "flow_run_id": r[1], "verified": r[2], "outcome": r[3], "attempts": r[4]}
        for r in rows
    ]


def ledger_status(pg_url: str, inc: str) -> str | None:
    rows = ledger_rows(pg_url, inc)
    return rows[0]["status"] if rows else None


def events(pg_url: str, inc: str) -> list[tuple[str, str, dict[str, Any]]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT kind, summary, detail FROM runbook.action_events WHERE incident_id = %s"
            " ORDER BY id",
            (inc,),
        ).fetchall()
    return [(str(k), str(s), dict(d or {})) for k, s, d in rows]


def lost_run_escalation(pg_url: str, inc: str, run_id: str) -> str | None:
    for kind, summary, detail in events(pg_url, inc):
        if kind == "escalated" and detail.get("lost_run") == run_id:
            return summary
    return None


def has_event(pg_url: str, inc: str, kind: str) -> bool:
    return any(k == kind for k, _, _ in events(pg_url, inc))


# -- Prefect ---------------------------------------------------------------------------------
async def state_of(run_id: str) -> tuple[str, str]:
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(run_id))
    assert run.state is not None
    return run.state.type.value, str(run.state.name)


async def wait_state(run_id: str, names: set[str], timeout: float = 180.0) -> str:
    async def reached() -> str | None:
        name = (await state_of(run_id))[1]
        return name if name in names else None

    return str(await until(reached, f"run {run_id} to reach {names}", timeout))


async def start_served(inc: str) -> str:
    """What an alert (or `runbook run rollback`) does: a run of the served deployment."""
    deadline = time.monotonic() + 120
    while True:  # the deployment exists once the served process has registered it
        try:
            run = await run_deployment(  # type: ignore[misc]
                DEPLOYMENT,
                parameters={"incident_id": inc, "verify_window_s": VERIFY_WINDOW_S},
                timeout=0,
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert isinstance(run, FlowRun)
    return str(run.id)


async def resume(run_id: str, **run_input: Any) -> None:
    async with get_client() as client:
        result = await client.resume_flow_run(uuid.UUID(run_id), run_input=run_input)
    assert result.status.value == "ACCEPT", result.details


def pages_about(sb: SandboxHandle, text: str) -> list[str]:
    return [str(p) for p in sb.sink("pagerduty") if text in str(p)]


def record(outcome: dict[str, Any]) -> None:
    """One line per fault for the report (RUNBOOK_FAULTS_REPORT, when set)."""
    path = os.environ.get("RUNBOOK_FAULTS_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(outcome) + "\n")
