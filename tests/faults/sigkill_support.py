"""What the SIGKILL fault tests share (tests/faults/test_sigkill*.py): the sandbox fixture and
one fault played end to end (tests/faults/scenario.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandbox.handle import SandboxHandle
from tests.budget import destructive_budget
from tests.faults.harness import PREFIX
from tests.faults.scenario import Fault


@pytest.fixture
async def sb(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SandboxHandle]:
    """The sandbox; afterwards this suite's acts are aged out of the hourly budgets."""
    async with destructive_budget(pg_url, monkeypatch, PREFIX):
        yield platform_env


async def fault(
    sb: SandboxHandle, pg_url: str, step: str, served: bool, kill: str = "tree"
) -> None:
    run = Fault(sb, pg_url, step, served, kill)
    try:
        outcome = await run.run()
    finally:
        run.cleanup()
    assert outcome["rollbacks"] == 1 and outcome["stuck"] == 0
