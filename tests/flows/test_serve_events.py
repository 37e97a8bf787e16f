"""`runbook serve` starts a run when Prefect's event stream says it is startable (a new run, or
a suspended run whose approval was answered), not at its next poll. A real runner and a real
Prefect server; the poll is set to 10 minutes, so only the events can start the run in time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from sandbox.local import process

pytestmark = pytest.mark.integration

POLL_S = 600  # the runner's own poll: far beyond any wait below


def _name(events: bool) -> str:
    return "events-probe" if events else "poll-only-probe"  # one deployment per runner


def _serve(events: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNBOOK_SERVE_POLL_S": str(POLL_S)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.flows.serve_events_probe", _name(events)]
        + ([] if events else ["--no-events"]),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def served(prefect_server: str, request: pytest.FixtureRequest) -> Iterator[None]:
    proc = _serve(events=request.param)
    try:
        yield
    finally:
        process.stop(proc, grace=20)


async def _after_first_poll(name: str) -> None:
    """Until the runner has registered the deployment and made its first poll (so the next
    poll is POLL_S away)."""
    deadline = time.monotonic() + 90
    async with get_client() as client:
        while time.monotonic() < deadline:
            try:
                found = await client.read_deployment_by_name(f"warm-probe/{name}")
            except Exception:
                found = None
            if found is not None and found.last_polled is not None:
                await asyncio.sleep(1)
                return
            await asyncio.sleep(0.3)
    raise TimeoutError("the runner never polled")


async def _start_run(name: str, out: Path) -> str:
    run = await run_deployment(  # type: ignore[misc]
        f"warm-probe/{name}", parameters={"out": str(out)}, timeout=0
    )
    return str(run.id)


async def _state_after(run_id: str, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
            name = run.state.name if run.state else "?"
            if (run.state and run.state.is_final()) or time.monotonic() > deadline:
                return name
            await asyncio.sleep(0.2)


async def _probe_after_the_first_poll(events: bool, tmp_path: Path, wait_s: float) -> str:
    """A run created once the runner's next poll is POLL_S away: its state after `wait_s`."""
    await _after_first_poll(_name(events))
    run_id = await _start_run(_name(events), tmp_path / "probe.json")
    return await _state_after(run_id, wait_s)


@pytest.mark.parametrize("served", [True], indirect=True)
async def test_a_new_run_starts_on_prefects_event_without_waiting_for_the_poll(
    served: None, tmp_path: Path
) -> None:
    state = await _probe_after_the_first_poll(True, tmp_path, 60)
    assert state == "Completed", "the run was not started on its event"
    assert (tmp_path / "probe.json").exists()


@pytest.mark.parametrize("served", [False], indirect=True)
async def test_without_the_events_the_same_run_waits_for_the_next_poll(
    served: None, tmp_path: Path
) -> None:
    """The control: the same runner without the pickup leaves the run Scheduled."""
    assert await _probe_after_the_first_poll(False, tmp_path, 15) == "Scheduled"
