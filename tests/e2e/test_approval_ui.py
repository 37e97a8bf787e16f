"""The approval path driven through the Prefect V2 UI in headless Debian Chromium."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from sandbox.handle import SandboxHandle
from tests.runbook.test_safety_core import code_from_slack, rollbacks, start_gated

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed"),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield instance
        await instance.close()


async def resume_in_ui(
    browser: Any,
    server: str,
    run_id: str,
    *,
    approve: bool,
    approver: str,
    code: str,
    reason: str,
) -> None:
    """What an operator does: open the run, menu → Resume, fill the form, click Resume."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        await page.goto(f"{server}/v2/runs/flow-run/{run_id}")
        await page.get_by_role("button", name="Open menu").click()
        await page.get_by_role("menuitem", name="Resume").click()
        dialog = page.get_by_role("dialog")
        await dialog.get_by_text("Resume Flow Run").wait_for()
        await dialog.get_by_text("rollback_deployment").first.wait_for()  # the description
        if approve:
            await dialog.get_by_label(re.compile(r"^Approve\b")).click()
        await dialog.get_by_label(re.compile(r"^Approver")).fill(approver)
        await dialog.get_by_label(re.compile(r"^Reason")).fill(reason)
        await dialog.get_by_label(re.compile(r"^Code")).fill(code)
        await dialog.get_by_role("button", name="Resume", exact=True).click()
        await dialog.wait_for(state="hidden", timeout=15_000)
    finally:
        await page.close()


async def gate_logs(run_id: str, expect: str) -> str:
    """The run's logs as the UI shows them (waits for the log batch to arrive)."""
    text = ""
    for _ in range(40):
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))
            )
        text = "\n".join(log.message for log in logs)
        if expect in text:
            break
        await asyncio.sleep(0.5)
    return text


async def test_ui_approve_with_code_acts_once(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, browser: Any
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-ui-approve")
    code = code_from_slack(sb, "alice", gate)
    await resume_in_ui(
        browser,
        prefect_server,
        gate,
        approve=True,
        approver="alice",
        code=code,
        reason="bad deploy, roll back",
    )
    result = await asyncio.wait_for(running, 60)
    assert result["status"] == "done", result
    assert result["approvers"] == ["alice"]
    assert rollbacks(sb) == before + 1


async def test_ui_reject_takes_no_action(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, browser: Any
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-ui-reject")
    await resume_in_ui(
        browser,
        prefect_server,
        gate,
        approve=False,
        approver="bob",
        code="",
        reason="not yet",
    )
    result = await asyncio.wait_for(running, 60)
    assert result["status"] == "rejected"
    assert "rejected by bob: not yet" in result["detail"]
    assert rollbacks(sb) == before


async def test_ui_wrong_code_takes_no_action_and_the_run_says_why(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, browser: Any
) -> None:
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-ui-wrong")
    await resume_in_ui(
        browser,
        prefect_server,
        gate,
        approve=True,
        approver="alice",
        code="12345678",
        reason="go",
    )
    result = await asyncio.wait_for(running, 60)
    assert result["status"] == "rejected"
    assert rollbacks(sb) == before
    why = "the one-time code for alice did not match"
    assert why in await gate_logs(gate, why)
