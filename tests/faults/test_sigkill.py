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

The served half is tests/faults/test_sigkill_served.py (two files: pytest-xdist runs them on two
workers).

Each test: `.venv/bin/pytest -n0 tests/faults -k NAME`.
"""

from __future__ import annotations

import pytest

from sandbox.handle import SandboxHandle
from tests.faults.sigkill_support import fault, sb

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["sb"]  # the fixture, imported for these tests


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
