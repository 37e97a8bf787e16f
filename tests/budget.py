"""Room in the destructive budget for tests that act on the same sandbox target again and again,
and the hour given back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from runbook import opsdb
from runbook.settings import get_settings


@contextlib.asynccontextmanager
async def destructive_budget(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, prefix: str, per_hour: int = 20
) -> AsyncIterator[None]:
    """`per_hour` destructive acts per target meanwhile; afterwards the acts of incidents named
    `prefix…` are aged out of the hour, so later tests on the same ledger and target start with
    the budget they expect."""
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", str(per_hour))
    get_settings.cache_clear()
    yield
    async with await opsdb.connect(pg_url) as conn:
        await conn.execute(
            "UPDATE runbook.actions SET updated_at = updated_at - interval '2 hours'"
            " WHERE incident_id LIKE %s",
            (prefix + "%",),
        )
