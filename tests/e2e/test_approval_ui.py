"""The approval path driven through the Prefect V2 UI in headless Debian Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
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
    screenshot: Path | None = None,
) -> None:
    """What an operator does: open the run, menu → Resume, fill the form, click Resume
    (`screenshot`: the filled form is saved there first)."""
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
        if screenshot is not None:
            await page.screenshot(path=str(screenshot))
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


DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes: docs/img when RUNBOOK_UPDATE_SCREENSHOTS=1 (how the pictures in
    the docs are made), else the test's temporary directory."""
    if os.environ.get("RUNBOOK_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG / name
    return tmp_path / name


async def test_ui_screenshots_of_the_approval_form_and_the_incident_timeline(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, browser: Any, tmp_path: Path
) -> None:
    """The pictures in README and docs/approvals.md: the filled approval form of a waiting run,
    and the incident-timeline artifact the run publishes once it has acted and verified."""
    sb = platform_env
    running, gate, before = await start_gated(sb, pg_url, "-ui-pictures")
    code = code_from_slack(sb, "alice", gate)
    form = screenshot_path(tmp_path, "approval-form.png")
    await resume_in_ui(
        browser,
        prefect_server,
        gate,
        approve=True,
        approver="alice",
        code=code,
        reason="bad deploy, roll back",
        screenshot=form,
    )
    result = await asyncio.wait_for(running, 60)
    assert result["status"] == "done", result
    assert rollbacks(sb) == before + 1
    assert form.stat().st_size > 10_000, "the approval form was captured"

    async with get_client() as client:
        gate_run = await client.read_flow_run(uuid.UUID(gate))
        parent = gate_run.parent_task_run_id
        task_run = await client.read_task_run(parent) if parent else None
        run_id = task_run.flow_run_id if task_run else gate_run.id
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    timeline = [a for a in artifacts if (a.key or "").startswith("timeline-")]
    assert timeline, [a.key for a in artifacts]
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        await page.goto(f"{prefect_server}/v2/artifacts/artifact/{timeline[0].id}")
        await page.get_by_text("approved").first.wait_for(timeout=30_000)
        await page.get_by_text("rollback_deployment").first.wait_for()
        picture = screenshot_path(tmp_path, "incident-timeline.png")
        await page.screenshot(path=str(picture), full_page=True)
    finally:
        await page.close()
    assert picture.stat().st_size > 10_000, "the timeline was captured"
