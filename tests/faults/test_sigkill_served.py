"""Fault suite (issue #15), served half: SIGKILL `runbook serve` together with the deployment
run of the `rollback` flow at each step (Prefect is told nothing and would show the run Running
for ever), restart serve, and check the same promises as tests/faults/test_sigkill.py (the
direct half, whose docstring says what they are). The last test kills only the served flow
run's process (`serve` lives on and Prefect marks the run Crashed itself): the ledger's
`started` act is still reconciled and a human paged. Two files so that pytest-xdist can run
the halves on two workers.

Each test: `.venv/bin/pytest -n0 tests/faults/test_sigkill_served.py -k NAME`.
"""

from __future__ import annotations

import pytest

from sandbox.handle import SandboxHandle
from tests.faults.sigkill_support import fault, sb

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["sb"]  # the fixture, imported for these tests


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
