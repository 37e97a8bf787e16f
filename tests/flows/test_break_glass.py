"""The outage rollback's break-glass: off by default (a second approver is required and a
timeout acts on nothing); when the environment turns it on, one approver suffices after the
wait, and a human is paged that it happened."""

from __future__ import annotations

import json

import pytest

from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.runbook.test_safety_core import code_from_slack, resume, rollbacks, start_gated

pytestmark = pytest.mark.integration


async def test_without_break_glass_one_approver_and_a_timeout_change_nothing(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_APPROVAL_TIMEOUT_S", "4")
    get_settings.cache_clear()
    pages_before = len(sb.sink("pagerduty"))
    running, gate, before = await start_gated(
        sb, pg_url, "-noglass", two_person=True, break_glass=True
    )
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="outage, roll back")
    result = await running
    assert result["status"] == "rejected", result
    assert rollbacks(sb) == before, "one approval and a timeout: nothing mutated"
    assert len(sb.sink("pagerduty")) > pages_before, "escalated"


async def test_break_glass_lets_one_approver_act_after_the_wait_and_pages(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_BREAK_GLASS_AFTER_S", "3")
    get_settings.cache_clear()
    pages_before = len(sb.sink("pagerduty"))
    running, gate, before = await start_gated(
        sb, pg_url, "-glass", two_person=True, break_glass=True
    )
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="outage, roll back")
    result = await running
    assert result["status"] == "done", result
    assert result["approvers"] == ["alice"]
    assert rollbacks(sb) == before + 1
    pages = [json.dumps(p) for p in sb.sink("pagerduty")[pages_before:]]
    assert any("break-glass" in p for p in pages)


async def test_break_glass_never_applies_to_an_act_not_marked_for_it(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    monkeypatch.setenv("RUNBOOK_BREAK_GLASS_AFTER_S", "2")
    monkeypatch.setenv("RUNBOOK_APPROVAL_TIMEOUT_S", "4")
    get_settings.cache_clear()
    running, gate, before = await start_gated(sb, pg_url, "-noflag", two_person=True)
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="first only")
    result = await running
    assert result["status"] == "rejected"
    assert rollbacks(sb) == before
