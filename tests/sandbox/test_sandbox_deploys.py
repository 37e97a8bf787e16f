"""The Railway fake's manual deploys: a commit builds, deploys and goes live over time (or fails
or crashes, by its marker), a newer deploy supersedes a pending one, reset cancels one; and the
project's second service has deployments of its own that the API's listing leaves out."""

from __future__ import annotations

import time

import pytest

from sandbox.handle import SandboxHandle
from sandbox.platform import Platform
from tasks import railway
from tests.sandbox.conftest import Blocks, eventually


def platform(stage_s: float = 0.05) -> Platform:
    return Platform(
        {
            "primary_model": "gpt-4o",
            "fallback_model": "gpt-4o-mini",
            "railway_project_id": "p",
            "railway_environment_id": "e",
            "railway_service_id": "s",
            "llm_api_key": "k",
            "deploy_stage_s": stage_s,
        }
    )


def settle(p: Platform, stage_s: float = 0.05) -> None:
    time.sleep(2 * stage_s + 0.05)
    p.advance()


@pytest.mark.unit
def test_a_commit_builds_then_deploys_then_goes_live() -> None:
    p = platform()
    before = p.current_id
    dep = p.deploy_commit("0123abcd", {"reason": "manual deploy"})
    assert dep.status == "BUILDING" and p.current_id == before, "not live while building"
    time.sleep(0.07)
    p.advance()
    assert dep.status == "DEPLOYING" and p.current_id == before
    settle(p)
    assert dep.status == "SUCCESS" and p.current_id == dep.id
    assert p.can_rollback(p.deployment(before))  # type: ignore[arg-type]
    messages = [x["message"] for x in p.logs if x["deploymentId"] == dep.id]
    assert messages[0].startswith("build started") and "live" in messages[-1]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("commit", "status", "live", "fault"),
    [
        ("bad0c0de1", "SUCCESS", True, "bad-deploy"),
        ("fa11c0de1", "FAILED", False, None),
        ("deadc0de1", "CRASHED", True, "complete-outage"),
        ("c0ffee123", "SUCCESS", True, None),
    ],
)
def test_the_commit_marker_decides_what_the_deploy_becomes(
    commit: str, status: str, live: bool, fault: str | None
) -> None:
    p = platform()
    before = p.current_id
    dep = p.deploy_commit(commit, {})
    settle(p)
    assert dep.status == status
    assert (p.current_id == dep.id) is live and (p.current_id == before) is not live
    assert sorted(p.faults) == ([fault] if fault else [])
    errors = [x for x in p.logs if x["deploymentId"] == dep.id and x["severity"] == "error"]
    assert bool(errors) is (status != "SUCCESS")


@pytest.mark.unit
def test_a_newer_deploy_supersedes_a_pending_one_and_reset_cancels_one() -> None:
    p = platform(stage_s=5.0)
    first = p.deploy_commit("1111111", {})
    second = p.deploy_commit("2222222", {})
    assert first.status == "REMOVED" and not first.stages
    assert second.status == "BUILDING"
    p.reset()
    assert second.status == "REMOVED" and not second.stages


@pytest.mark.unit
def test_a_crashed_deploy_is_fixed_by_reset() -> None:
    p = platform()
    p.deploy_commit("dead1234", {})
    settle(p)
    assert p.current.status == "CRASHED"
    p.reset()
    assert p.current.status == "SUCCESS" and p.current.defect is None and not p.faults


@pytest.mark.unit
def test_the_other_service_has_its_own_deployments() -> None:
    p = platform()
    worker = [d for d in p.deployments if d.service_id == p.other_service_id]
    assert len(worker) == 2 and p.other_current_id == worker[-1].id
    assert p.can_rollback(worker[0]) and not p.can_rollback(worker[-1])
    before = p.current_id
    p.rollback_other(worker[0])
    assert p.current_id == before, "the API is untouched"


# -- over GraphQL, with the production clients --------------------------------------------------


@pytest.mark.integration
async def test_deploy_commit_over_graphql_goes_live_and_is_listed(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    applied = await railway.deploy_commit.fn(blocks.railway, "abcdef1234")
    assert applied.new_deployment_id
    new = await railway.get_deployment.fn(blocks.railway, applied.new_deployment_id)
    assert new.status in {"BUILDING", "DEPLOYING"} and new.commit == "abcdef1234"
    assert new.service_id == blocks.railway.service_id
    live = await eventually(
        lambda: railway.get_deployments.fn(blocks.railway),
        lambda listing: listing.current_id == applied.new_deployment_id,
        timeout=15,
    )
    assert live.current_id == applied.new_deployment_id
    assert sandbox.journal()[-1]["operation"] == "serviceInstanceDeployV2"


@pytest.mark.integration
async def test_a_failing_build_logs_errors_and_never_goes_live(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    before = (await railway.get_deployments.fn(blocks.railway)).current_id
    applied = await railway.deploy_commit.fn(blocks.railway, "fa11fa11fa")
    dep_id = applied.new_deployment_id or ""
    failed = await eventually(
        lambda: railway.get_deployment.fn(blocks.railway, dep_id),
        lambda d: d.status == "FAILED",
        timeout=15,
    )
    assert failed.status == "FAILED" and not failed.can_rollback
    logs = await railway.get_deployment_logs.fn(blocks.railway, dep_id)
    assert any("build failed" in x.message for x in logs.lines)
    assert (await railway.get_deployments.fn(blocks.railway)).current_id == before


@pytest.mark.integration
async def test_another_services_deployment_is_found_by_id_but_not_listed(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    listing = await railway.get_deployments.fn(blocks.railway)
    assert all(d.service_id == blocks.railway.service_id for d in listing.items)
    worker_id = sandbox.state()["worker_deployments"][0]
    other = await railway.get_deployment.fn(blocks.railway, worker_id)
    assert other.service_id not in {None, blocks.railway.service_id}
    assert other.can_rollback
