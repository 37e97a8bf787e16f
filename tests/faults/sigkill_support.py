"""What the SIGKILL fault tests share (tests/faults/test_sigkill*.py): the sandbox fixture and
one fault played end to end (tests/faults/scenario.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.faults.harness import PREFIX
from tests.faults.scenario import Fault


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
