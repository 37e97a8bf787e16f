"""Scaling Procedures against the sandbox and a real Prefect server: caps, the need of the last
hour's traffic, approvals (two for the RDS resize), the modifying → available wait, a change
deferred to the maintenance window, bad parameters, dry runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.input import keyset_from_paused_state

from flows.rds_resize import rds_resize
from flows.scaling import scale_replicas, scale_vertical
from runbook import opsdb
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.runbook.test_safety_core import code_from_slack, resume

pytestmark = pytest.mark.integration


def ops(sb: SandboxHandle, operation: str) -> int:
    return sum(1 for e in sb.journal() if e["operation"] == operation)


def rds_now(sb: SandboxHandle) -> dict[str, Any]:
    found: dict[str, Any] = sb.state()["rds"]
    return found


async def rds_available(sb: SandboxHandle, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while rds_now(sb)["status"] != "available" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


@pytest.fixture
def destructive_budget(platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests resize the same sandbox instance many times an hour."""
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "100")
    get_settings.cache_clear()


async def waiting_at(pg_url: str, action: str, pause_key: str, timeout: float = 60) -> str:
    """The paused approval-gate run waiting at `pause_key` (approval-1, approval-2) for `action`."""
    deadline = time.monotonic() + timeout
    async with await opsdb.connect(pg_url) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT flow_run_id FROM runbook.approvals WHERE action = %s AND pause_key = %s"
                " AND status = 'waiting' ORDER BY requested_at DESC LIMIT 1",
                (action, pause_key),
            )
            row = await cur.fetchone()
            if row:
                async with get_client() as client:
                    run = await client.read_flow_run(uuid.UUID(row[0]))
                if run.state and run.state.is_paused():
                    return str(row[0])
            await asyncio.sleep(0.2)
    raise AssertionError(f"no approval of {action} waited at {pause_key}")


async def form_description(gate: str) -> str:
    """What the Prefect UI's Resume form shows above the fields."""
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(gate))
        assert run.state is not None
        key = keyset_from_paused_state(run.state)["description"]
        return await client.read_flow_run_input(uuid.UUID(gate), key)


async def approve(sb: SandboxHandle, gate: str, who: str) -> None:
    code = code_from_slack(sb, who, gate)
    await resume(gate, approve=True, approver=who, code=code, reason=f"{who}: resize it")


# -- scale-replicas ---------------------------------------------------------------------------
async def test_replicas_over_the_policy_cap_are_refused_and_nothing_changes(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    before = len(sb.journal())
    result = await scale_replicas(replicas=8)  # Railway allows 50; the Policy caps at 5
    assert result.action_status == "refused", result
    assert "replicas=8 is over the Policy cap max_replicas=5" in result.summary
    assert result.summary.startswith("NOT done")
    assert len(sb.journal()) == before and sb.state()["replicas"] == 2


async def test_scale_up_sets_the_replicas_and_verifies_the_count(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    before = ops(sb, "environmentPatchCommit")
    result = await scale_replicas(replicas=4)
    assert result.decision == "scale_up" and result.action_status == "done", result
    assert result.verified is True
    assert "the service reports 4 replicas" in result.summary
    assert sb.state()["replicas"] == 4
    assert ops(sb, "environmentPatchCommit") == before + 1


async def test_scale_down_below_what_the_last_hours_traffic_needs_is_refused(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    sb.inject("high-load")  # latency ∝ 1/replicas: 2 replicas are far too few
    await asyncio.sleep(8)
    before = len(sb.journal())
    result = await scale_replicas(replicas=1)
    assert result.action_status == "refused", result
    assert "replicas=1 is below what traffic needs" in result.summary
    assert "over the last hour" in result.summary
    assert len(sb.journal()) == before and sb.state()["replicas"] == 2


# -- scale-vertical ---------------------------------------------------------------------------
async def test_vertical_scaling_waits_for_approval_then_sets_limits_and_verifies_health(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    before = ops(sb, "serviceInstanceLimitsUpdate")
    running = asyncio.create_task(scale_vertical(vcpus=4, memory_gb=8, verify_window_s=10))
    gate = await waiting_at(pg_url, "set_service_limits", "approval-1")
    assert ops(sb, "serviceInstanceLimitsUpdate") == before, "nothing before the approval"
    await approve(sb, gate, "alice")
    result = await running
    assert result.action_status == "done" and result.verified is True, result
    assert result.approvers == ["alice"]
    assert sb.state()["limits"] == {"vCPUs": 4.0, "memoryGB": 8.0}
    assert ops(sb, "serviceInstanceLimitsUpdate") == before + 1


# -- rds-resize -------------------------------------------------------------------------------
@pytest.mark.usefixtures("destructive_budget")
async def test_rds_resize_waits_for_two_approvers_then_modifies_and_verifies(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    await rds_available(sb)
    before = ops(sb, "ModifyDBInstance")
    running = asyncio.create_task(rds_resize(instance_class="db.t3.large", poll_s=0.5))
    gate = await waiting_at(pg_url, "modify_db_instance_class", "approval-1")
    form = await form_description(gate)
    for shown in (
        "| current class | db.t3.medium |",
        "| target class | db.t3.large |",
        "$0.144/h → $0.290/h: +0.146 USD/h",  # Multi-AZ: two instances
        "| Multi-AZ | yes (standby in us-east-1",  # the zone depends on earlier failovers
        "| expected downtime | about 1-2 minutes",
        "approver 1 of 2",
    ):
        assert shown in form, (shown, form)
    await approve(sb, gate, "alice")
    assert await waiting_at(pg_url, "modify_db_instance_class", "approval-2") == gate
    assert ops(sb, "ModifyDBInstance") == before, "one approver is not enough"
    await approve(sb, gate, "bob")
    result = await running
    assert result.action_status == "done" and result.verified is True, result
    assert result.approvers == ["alice", "bob"]
    assert "RDS is db.t3.large and available" in result.summary
    assert "(modifying → available)" in result.summary
    assert ops(sb, "ModifyDBInstance") == before + 1
    assert rds_now(sb)["instance_class"] == "db.t3.large"


@pytest.mark.usefixtures("destructive_budget")
async def test_deferred_rds_resize_is_pending_with_the_class_unchanged(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    await rds_available(sb)
    running = asyncio.create_task(rds_resize(instance_class="db.m5.large", apply_immediately=False))
    gate = await waiting_at(pg_url, "modify_db_instance_class", "approval-1")
    assert "at the next maintenance window" in await form_description(gate)
    await approve(sb, gate, "alice")
    await waiting_at(pg_url, "modify_db_instance_class", "approval-2")
    await approve(sb, gate, "bob")
    result = await running
    assert result.verified is True, result
    assert "db.m5.large pending for the maintenance window; still db.t3.medium" in result.summary
    state = rds_now(sb)
    assert (state["status"], state["instance_class"], state["pending_class"]) == (
        "available",
        "db.t3.medium",
        "db.m5.large",
    )


@pytest.mark.usefixtures("destructive_budget")
async def test_rds_wait_that_runs_out_pages_and_leaves_the_act_done_but_unverified(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str
) -> None:
    sb = platform_env
    await rds_available(sb)
    running = asyncio.create_task(
        rds_resize(instance_class="db.t3.large", wait_timeout_s=1, poll_s=0.5)
    )
    gate = await waiting_at(pg_url, "modify_db_instance_class", "approval-1")
    await approve(sb, gate, "alice")
    await waiting_at(pg_url, "modify_db_instance_class", "approval-2")
    pages_before = len(sb.sink("pagerduty"))
    await approve(sb, gate, "bob")
    result = await running
    assert result.action_status == "done" and result.verified is False, result
    assert "RDS still modifying" in result.summary
    pages = [str(p) for p in sb.sink("pagerduty")[pages_before:]]
    assert any("RDS still modifying" in p for p in pages), pages
    async with await opsdb.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT status, verified FROM runbook.actions WHERE incident_id = %s",
            (result.incident_id,),
        )
        assert await cur.fetchall() == [("done", False)]  # sent once; never re-sent blind
    await rds_available(sb)


# -- bad parameters and dry runs ----------------------------------------------------------------
FAILED, REFUSED = "Failed", "refused"


@pytest.mark.parametrize(
    ("flow", "params", "ends", "named"),
    [
        (scale_replicas, {"replicas": -1}, FAILED, "replicas=-1 (Input should be greater than"),
        (scale_replicas, {"replicas": 80}, FAILED, "replicas=80 (Input should be less than or"),
        (scale_replicas, {"replicas": 6}, REFUSED, "replicas=6 is over the Policy cap"),
        (rds_resize, {"instance_class": "large please"}, FAILED, "instance_class='large please'"),
        (rds_resize, {"instance_class": "db.x9.huge"}, REFUSED, "instance_class='db.x9.huge' is"),
        (scale_vertical, {"vcpus": 12, "memory_gb": 4}, REFUSED, "vcpus=12 is over the Policy"),
        (scale_vertical, {"vcpus": 100, "memory_gb": 4}, FAILED, "vcpus=100 (Input should be"),
        (scale_vertical, {"vcpus": 0, "memory_gb": 4}, FAILED, "vcpus=0 (Input should be greater"),
    ],
    ids=[
        "negative-replicas",
        "replicas-over-railway",
        "replicas-over-policy",
        "malformed-class",
        "unknown-class",
        "vcpus-over-policy",
        "vcpus-over-bound",
        "zero-vcpus",
    ],
)
async def test_a_bad_parameter_ends_failed_or_refused_naming_it_and_changes_nothing(
    prefect_server: str,
    platform_env: SandboxHandle,
    flow: Any,
    params: dict[str, Any],
    ends: str,
    named: str,
) -> None:
    sb = platform_env
    before = len(sb.journal())
    modify_requests = rds_now(sb)["requests"].get("ModifyDBInstance", 0)
    state = await flow(**params, return_state=True)
    if ends == FAILED:  # Prefect refused the parameter before the flow ran: one line
        assert state.is_failed(), state
        assert named in (state.message or "") and "\n" not in (state.message or ""), state
    else:  # the flow refused it against the Policy or RDS before any act
        assert state.is_completed(), state
        result = await state.aresult()
        assert result.action_status == "refused" and named in result.summary, result
    assert len(sb.journal()) == before, "nothing mutated"
    assert rds_now(sb)["requests"].get("ModifyDBInstance", 0) == modify_requests


async def test_dry_run_of_each_scaling_flow_plans_and_changes_nothing(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    await rds_available(sb)
    before = len(sb.journal())
    modify_requests = rds_now(sb)["requests"].get("ModifyDBInstance", 0)
    results = [
        await scale_replicas(replicas=4, dry_run=True),
        await scale_vertical(vcpus=4, memory_gb=8, dry_run=True),
        await rds_resize(instance_class="db.t3.large", dry_run=True),
    ]
    for result in results:
        assert result.dry_run and result.action_status == "planned", result
    assert len(sb.journal()) == before, "the sandbox saw no mutation"
    assert rds_now(sb)["requests"].get("ModifyDBInstance", 0) == modify_requests
    assert sb.state()["replicas"] == 2 and rds_now(sb)["instance_class"] == "db.t3.medium"
