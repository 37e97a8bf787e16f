"""Deployment Procedures against the sandbox and a real Prefect server, flows called directly:
approvals pause in the approval-gate subflow and are answered through the resume API with the
one-time code from the Slack sink. The sandbox journal is what Railway saw."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from blocks import AppDatabase, Railway
from blocks.policy import Policy
from flows.deployment import deploy_watch, manual_deploy, rollback
from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tasks import app_metrics, railway
from tests.budget import destructive_budget
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
PREFIX = "dpl-"
T = TypeVar("T")


def incident() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}"


def sha(marker: str = "") -> str:
    return (marker + secrets.token_hex(6))[:12]


def ops(sb: SandboxHandle, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
    return [(e["operation"], e["args"]) for e in sb.journal()[since:]]


@pytest.fixture
async def sb(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SandboxHandle]:
    """The sandbox, with room in the destructive budget for a deploy and a rollback per test.
    Afterwards this module's acts are aged out of the hour, so later tests on the same ledger
    and target start with the budget they expect."""
    async with destructive_budget(pg_url, monkeypatch, PREFIX):
        yield platform_env


async def timeline(pg_url: str, inc: str) -> list[str]:
    async with await opsdb.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT kind, summary FROM runbook.action_events WHERE incident_id = %s ORDER BY id",
            (inc,),
        )
        return [f"{kind}: {summary}" for kind, summary in await cur.fetchall()]


async def gate_for(pg_url: str, inc: str, after: str = "", timeout: float = 40) -> str:
    """The approval gate of `inc` paused now (not `after`); else fail with the incident's
    timeline, so the reason shows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            gate = await waiting_gate(pg_url, inc, timeout=2)
        except AssertionError:
            continue
        if gate != after:
            return gate
        await asyncio.sleep(0.3)
    raise AssertionError(f"no approval gate paused for {inc}: {await timeline(pg_url, inc)}")


async def approve(
    pg_url: str, sb: SandboxHandle, inc: str, approver: str = "alice", after: str = ""
) -> str:
    gate = await gate_for(pg_url, inc, after)
    code = code_from_slack(sb, approver, gate)
    await resume(gate, approve=True, approver=approver, code=code, reason="deploy procedure")
    return gate


async def within(running: Awaitable[T], seconds: float = 60) -> T:
    """A flow that should end by itself (never left waiting for an approval nobody gives)."""
    return await asyncio.wait_for(running, seconds)


async def deploy_directly(commit: str) -> str:
    """A deploy someone else made (a push to main): not through our flows."""
    applied = await railway.deploy_commit.fn(await Railway.resolve(), commit)
    assert applied.new_deployment_id
    return applied.new_deployment_id


async def clean_baseline(window_s: int, timeout: float = 30) -> None:
    """Wait until the last `window_s` of the app's traffic carry no earlier test's errors (a bad
    deploy that the previous test left behind would be this test's baseline)."""
    db = await AppDatabase.resolve()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await app_metrics.get_error_rate.fn(db, window_s)).rate_pct < 1.0:
            return
        await asyncio.sleep(1)


async def test_a_deploy_that_regresses_is_rolled_back_after_approval(
    sb: SandboxHandle, pg_url: str
) -> None:
    await clean_baseline(12)
    inc, commit, start = incident(), sha("bad"), len(sb.journal())
    running = asyncio.create_task(
        manual_deploy(commit, "production", window_s=12, incident_id=inc, verify_window_s=20)
    )
    first = await approve(pg_url, sb, inc)  # the deploy itself: production needs approval
    await gate_for(pg_url, inc, after=first)  # then the watch's rollback
    assert [op for op, _ in ops(sb, start)] == ["serviceInstanceDeployV2"], "no rollback yet"
    await approve(pg_url, sb, inc, "bob", after=first)
    result = await within(running)
    assert result.decision == "deploy → rollback", result
    assert result.verified is False, "the deploy did not reach its goal"
    assert "deploy-watch: rolled back to" in result.summary
    steps = await timeline(pg_url, inc)
    assert any(x.startswith("decided: regressed → rollback") for x in steps), steps
    assert [op for op, _ in ops(sb, start)] == ["serviceInstanceDeployV2", "deploymentRollback"]
    assert ops(sb, start)[0][1]["commitSha"] == commit
    state = sb.state()["deployment"]
    assert state["defect"] is None and state["status"] == "SUCCESS", "the good one is live again"


async def test_a_healthy_deploy_ends_green_and_nothing_else_is_changed(
    sb: SandboxHandle, pg_url: str
) -> None:
    new_id = await deploy_directly(sha("c0de"))
    start, inc = len(sb.journal()), incident()
    result = await within(deploy_watch(new_id, window_s=10, incident_id=inc))
    assert result.decision == "healthy", result
    assert result.verified is True and result.action == "none"
    assert f"{new_id} is healthy" in result.why
    assert ops(sb, start) == [], "the watch mutated nothing"
    assert sb.state()["deployment"]["id"] == new_id
    progress = [x for x in await timeline(pg_url, inc) if x.startswith("progress: ")]
    assert progress and progress[-1].startswith(f"progress: deployment {new_id}: ")
    assert "→ SUCCESS after" in progress[-1], "each status change is on the timeline"


async def test_manual_deploy_to_staging_then_to_production_after_approval(
    sb: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging's Policy document auto-approves (and the acting process allows it); production
    has none, so the floor asks a human. In the sandbox both environments are the same Railway
    fake, so production gets the next commit (the staging one is live there already)."""
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    get_settings.cache_clear()
    await Policy(auto_approve=True).asave("staging", overwrite=True)
    try:
        start, staged, released = len(sb.journal()), sha("5a9e"), sha("9a0d")
        on_staging = await within(
            manual_deploy(staged, "staging", window_s=10, incident_id=incident())
        )
        assert on_staging.decision == "deploy → healthy", on_staging
        assert on_staging.verified is True and on_staging.approvers == []
        inc = incident()
        running = asyncio.create_task(
            manual_deploy(released, "production", window_s=10, incident_id=inc)
        )
        await gate_for(pg_url, inc)
        await asyncio.sleep(1)
        assert len(ops(sb, start)) == 1, "production waits for a human"
        await approve(pg_url, sb, inc)
        on_production = await within(running)
    finally:
        await Policy.adelete("staging")
    assert on_production.decision == "deploy → healthy", on_production
    assert on_production.approvers == ["alice"]
    deploys = [args["commitSha"] for op, args in ops(sb, start) if op == "serviceInstanceDeployV2"]
    assert deploys == [staged, released]
    assert [op for op, _ in ops(sb, start)] == ["serviceInstanceDeployV2"] * 2
    async with await opsdb.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT target, approvers FROM runbook.actions WHERE action = 'deploy_commit'"
            " AND params->>'commit_sha' = ANY(%s) ORDER BY created_at",
            ([staged, released],),
        )
        rows = await cur.fetchall()
    service = sb.env["RUNBOOK_RAILWAY_SERVICE_ID"]
    assert [r[0] for r in rows] == [f"railway:{service}@staging", f"railway:{service}"]
    assert [list(r[1] or []) for r in rows] == [[], ["alice"]]


async def test_rollback_to_the_last_known_good_after_approval(
    sb: SandboxHandle, pg_url: str
) -> None:
    sb.inject("bad-deploy")
    bad, start, inc = sb.state()["deployment"]["id"], len(sb.journal()), incident()
    running = asyncio.create_task(rollback(incident_id=inc, verify_window_s=20))
    await approve(pg_url, sb, inc)
    result = await within(running)
    assert result.action_status == "done" and result.verified is True, result
    assert [op for op, _ in ops(sb, start)] == ["deploymentRollback"]
    assert sb.state()["deployment"]["id"] != bad and sb.state()["deployment"]["defect"] is None


async def test_rollback_to_a_deployment_railway_cannot_roll_back_is_refused(
    sb: SandboxHandle,
) -> None:
    listing = await railway.get_deployments.fn(await Railway.resolve(), first=500)
    failed = next(d for d in listing.items if d.status == "FAILED")
    start = len(sb.journal())
    result = await within(rollback(failed.id, incident_id=incident()))
    assert result.action_status == "refused", result
    assert f"deployment {failed.id} cannot be rolled back to (FAILED" in result.summary
    assert ops(sb, start) == []


async def test_rollback_of_another_services_deployment_is_refused_naming_it(
    sb: SandboxHandle,
) -> None:
    worker = sb.state()["worker_deployments"][0]
    start = len(sb.journal())
    result = await within(rollback(worker, incident_id=incident()))
    assert result.action_status == "refused", result
    service = sb.env["RUNBOOK_RAILWAY_SERVICE_ID"]
    assert f"deployment {worker} belongs to service svc-sbx-worker, not {service}" in result.why
    assert ops(sb, start) == []


BAD_PARAMETERS = [
    (manual_deploy, {"commit_sha": "zz"}, "commit_sha", "7 to 40 hex characters"),
    (manual_deploy, {"commit_sha": "main"}, "commit_sha", "7 to 40 hex characters"),
    (manual_deploy, {"commit_sha": "abc1234", "environment": "prod"}, "environment", "staging"),
    (manual_deploy, {"commit_sha": "abc1234", "window_s": 5}, "window_s", "greater than"),
    (rollback, {"deployment_id": "dep 1; x"}, "deployment_id", "Railway deployment id"),
    (rollback, {"environment": "qa"}, "environment", "'production' or 'staging'"),
    (deploy_watch, {"deployment_id": ""}, "deployment_id", "Railway deployment id"),
    (deploy_watch, {"timeout_s": 99999}, "timeout_s", "less than or equal to 3600"),
]


@pytest.mark.parametrize(
    ("flow_fn", "params", "name", "allowed"),
    BAD_PARAMETERS,
    ids=[f"{f.name}-{n}-{i}" for i, (f, _, n, _) in enumerate(BAD_PARAMETERS)],
)
async def test_a_bad_parameter_fails_the_run_before_any_check(
    sb: SandboxHandle, flow_fn: Any, params: dict[str, Any], name: str, allowed: str
) -> None:
    start = len(sb.journal())
    state = await flow_fn(**params, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "\n" not in message, "one line"
    assert f"{flow_fn.name}: bad parameter {name}=" in message and allowed in message, message
    assert ops(sb, start) == []


async def test_a_dry_run_of_each_flow_changes_nothing(sb: SandboxHandle) -> None:
    sb.inject("bad-deploy")  # a bad deployment is live: each flow has something to plan
    start = len(sb.journal())
    deploy = await within(manual_deploy(sha(), "production", dry_run=True, incident_id=incident()))
    assert (deploy.action_status, deploy.dry_run) == ("planned", True), deploy
    back = await within(rollback(dry_run=True, incident_id=incident()))
    assert back.action_status == "planned", back
    watched = await within(deploy_watch(window_s=10, dry_run=True, incident_id=incident()))
    assert watched.decision == "rollback" and watched.action_status == "planned", watched
    assert ops(sb, start) == [], "a dry run changes nothing on the platform"


async def test_a_crashed_deploy_pages_and_plans_the_rollback(sb: SandboxHandle) -> None:
    crashed = await deploy_directly(sha("dead"))
    pages, inc = len(sb.sink("pagerduty")), incident()
    result = await within(deploy_watch(crashed, window_s=10, dry_run=True, incident_id=inc))
    assert result.decision == "rollback" and result.action_status == "planned", result
    assert "CRASHED" in result.why
    assert any(crashed in str(p) for p in sb.sink("pagerduty")[pages:]), "the on-call is paged"


async def test_a_failed_build_pages_and_leaves_the_previous_deployment_serving(
    sb: SandboxHandle,
) -> None:
    live = sb.state()["deployment"]["id"]
    failed = await deploy_directly(sha("fa11"))
    pages, start = len(sb.sink("pagerduty")), len(sb.journal())
    result = await within(deploy_watch(failed, window_s=10, incident_id=incident()))
    assert result.decision == "broken" and result.action == "none", result
    assert f"previous good deployment {live} still serves" in result.why
    assert any(failed in str(p) for p in sb.sink("pagerduty")[pages:])
    assert ops(sb, start) == [] and sb.state()["deployment"]["id"] == live
