"""Fault suite (issue #15): SIGKILL the process running a destructive flow (the `rollback` flow
after a bad deploy, approved by an operator) at each step, for a flow run directly and for a
served deployment run (the served process and its flow run killed together: Prefect is told
nothing and would show the run Running for ever). The product recovers — the sweeper (`runbook
sweep`, or `runbook serve` restarted) finds the run whose lease is gone, marks it Crashed,
reconciles its act against the platform and pages; the operator reruns the flow as the page
asks — and then:

* Railway performed the rollback exactly once (the sandbox journal), the ledger has one entry,
  `done`, sent once (attempts 1);
* no ledger entry is left in flight (intent / approved / started);
* the incident was escalated (page + timeline) and its rerun finished it; the killed run is
  Crashed in Prefect, never Running.

The last test kills only the served flow run's process (`serve` lives on and Prefect marks the
run Crashed itself): the ledger's `started` act is still reconciled and a human paged.

Each test: `.venv/bin/pytest -n0 tests/faults -k NAME`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.faults.harness import PREFIX
from tests.faults.scenario import Fault

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
async def sb(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SandboxHandle]:
    """The sandbox; afterwards this suite's acts are aged out of the hourly budgets."""
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "20")
    get_settings.cache_clear()
    yield platform_env
    async with await opsdb.connect(pg_url) as conn:
        await conn.execute(
            "UPDATE runbook.actions SET updated_at = updated_at - interval '2 hours'"
            " WHERE incident_id LIKE %s",
            (PREFIX + "%",),
        )


async def fault(
    sb: SandboxHandle, pg_url: str, step: str, served: bool, kill: str = "tree"
) -> None:
    run = Fault(sb, pg_url, step, served, kill)
    try:
        outcome = await run.run()
    finally:
        run.cleanup()
    assert outcome["rollbacks"] == 1 and outcome["stuck"] == 0


async def test_sigkill_after_approval_direct_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "after_approval", served=False)


async def test_sigkill_during_act_direct_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "during_act", served=False)


async def test_sigkill_after_act_before_record_direct_acts_once(
    sb: SandboxHandle, pg_url: str
) -> None:
    await fault(sb, pg_url, "after_act", served=False)


async def test_sigkill_during_verify_direct_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "during_verify", served=False)


async def test_sigkill_after_approval_served_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "after_approval", served=True)


async def test_sigkill_during_act_served_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "during_act", served=True)


async def test_sigkill_after_act_before_record_served_acts_once(
    sb: SandboxHandle, pg_url: str
) -> None:
    await fault(sb, pg_url, "after_act", served=True)


async def test_sigkill_during_verify_served_acts_once(sb: SandboxHandle, pg_url: str) -> None:
    await fault(sb, pg_url, "during_verify", served=True)


async def test_sigkill_flow_process_only_during_act_served_runner_crash_reconciled(
    sb: SandboxHandle, pg_url: str
) -> None:
    """`serve` survives: Prefect marks the run Crashed itself; the sweeper still reconciles the
    act the ledger left `started`, and pages."""
    await fault(sb, pg_url, "during_act", served=True, kill="flow")
