"""Ledger rules with a real ops database: unknown outcomes are never retried blind, and a
"did not act" verdict never overwrites an act another run performed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from blocks.policy import Policy
from runbook import ledger, opsdb
from runbook.actions import ActionClass, ActionRequest
from runbook.safety import Approval, perform
from runbook.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def ops_env(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_OPS_DATABASE_URL", pg_url)
    get_settings.cache_clear()


def request() -> ActionRequest:
    return ActionRequest(
        incident_id=f"inc-{uuid.uuid4().hex[:8]}", action="switch_model", target="railway:test"
    )


async def test_started_without_a_way_to_check_is_not_repeated_and_pages(ops_env: None) -> None:
    req = request()
    async with await opsdb.connect() as conn:  # a crash left it `started`
        await ledger.ensure(
            conn, req, ActionClass.SAFE, status="started", dry_run=False, flow_run_id=None
        )
    calls: list[str] = []
    pages: list[str] = []

    async def act() -> dict[str, Any]:
        calls.append("acted")
        return {}

    async def page(summary: str, details: dict[str, Any]) -> None:
        pages.append(summary)

    async def approve(_: ActionRequest) -> Approval:
        raise AssertionError("a safe act needs no approval")

    outcome = await perform(
        req, policy=Policy(), act=act, dry_run=False, approve=approve, page=page, reconcile=None
    )
    assert outcome.status == "failed" and "not repeated" in outcome.detail
    assert calls == []
    assert pages and "outcome unknown" in pages[0]


async def test_a_rejection_never_overwrites_a_done_act(ops_env: None) -> None:
    req = request()
    async with await opsdb.connect() as conn:
        await ledger.ensure(
            conn, req, ActionClass.DESTRUCTIVE, status="done", dry_run=False, flow_run_id=None
        )
        await ledger.mark(conn, req.idempotency_key, "rejected", outcome={"reason": "timeout"})
        entry = await ledger.get(conn, req.idempotency_key)
    assert entry is not None and entry.status == "done"
