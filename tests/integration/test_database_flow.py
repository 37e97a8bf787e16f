"""§4 against the sandbox, alone and as §1's subflow for database errors."""

from __future__ import annotations

import asyncio

import pytest

from flows.database_connections import database_connections
from flows.high_error_rate import high_error_rate
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle

pytestmark = pytest.mark.integration


def ops(sb: SandboxHandle, operation: str) -> int:
    return sum(1 for e in sb.journal() if e["operation"] == operation)


async def test_pool_exhaustion_in_high_error_rate_runs_database_subflow(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    sb.inject("db-pool-exhausted")
    await asyncio.sleep(12)
    before = ops(sb, "variableCollectionUpsert")
    result = await high_error_rate(verify_window_s=45)
    assert result.decision == "check_database → raise_pool", result
    assert result.verified is True
    assert "DATABASE_POOL_SIZE → 30" in result.summary
    assert ops(sb, "variableCollectionUpsert") == before + 1
    assert sb.state()["pool_size"] == 30


async def test_database_down_fails_over_once_after_approval_policy(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_AUTO_APPROVE", "true")  # staging-style: no human in this test
    get_settings.cache_clear()
    sb.inject("db-down")
    await asyncio.sleep(8)
    before = ops(sb, "RebootDBInstance")
    result = await database_connections(verify_window_s=45)
    assert result.decision == "failover_db", result
    assert result.action_status == "done" and result.verified is True
    assert ops(sb, "RebootDBInstance") == before + 1
