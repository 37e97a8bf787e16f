"""Acceptance: for every fault, inject → the production task sees the symptom → the runbook's
remedy through the production task → the symptom clears. Everything over HTTP/SQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from runbook.domain import Status
from runbook.errors import TransientError
from sandbox.handle import SandboxHandle
from tasks import app_metrics, langsmith, llm, railway, rds, status_pages
from tasks.redis import get_redis_latency
from tasks.support_api import get_api_health, get_api_readiness
from tests.sandbox.conftest import Blocks, eventually

pytestmark = pytest.mark.integration
WINDOW_S = 2  # a fresh window of traffic: the sandbox writes ~50 chats/s


async def fresh_error_rate(blocks: Blocks) -> app_metrics.ErrorRate:
    """Let a whole window of new traffic land, then measure only that window."""
    await asyncio.sleep(WINDOW_S + 0.4)
    return await app_metrics.get_error_rate.fn(blocks.db, window_s=WINDOW_S)


async def ready_checks(blocks: Blocks) -> dict[str, str]:
    """What `/health/ready` says about each dependency (a 503 names the failing one)."""
    async with httpx.AsyncClient(base_url=blocks.api.base_url, timeout=10) as client:
        checks: dict[str, str] = (await client.get("/health/ready")).json()["checks"]
    return checks


async def roll_back_to_last_known_good(blocks: Blocks) -> str:
    listing = await railway.get_deployments.fn(blocks.railway)
    assert listing.current_id is not None
    good = railway.last_known_good(listing.items, listing.current_id)
    assert good is not None, "the sandbox keeps an older good deployment"
    await railway.rollback_deployment.fn(blocks.railway, good.id)
    return good.id


async def test_fault_bad_deploy_cured_by_rollback(sandbox: SandboxHandle, blocks: Blocks) -> None:
    before = sandbox.state()["deployment"]["id"]
    sandbox.inject("bad-deploy")
    listing = await railway.get_deployments.fn(blocks.railway)
    assert listing.current_id != before
    assert listing.items[0].status == "SUCCESS"

    sick = await fresh_error_rate(blocks)
    assert sick.rate_pct > 5.0, sick
    logs = await railway.get_deployment_logs.fn(blocks.railway, listing.current_id or "")
    assert logs.lines and all(line.severity == "error" for line in logs.lines)
    distribution = await app_metrics.get_error_distribution.fn(blocks.db, window_s=10)
    assert any("application" in s for s in distribution.samples.values())

    target = await roll_back_to_last_known_good(blocks)
    acted_at = datetime.now(UTC)  # the sandbox has switched deployments before it answers
    healed = await fresh_error_rate(blocks)
    assert healed.rate_pct <= 2.0, healed
    since_act = await app_metrics.get_error_rate.fn(blocks.db, window_s=3600, since=acted_at)
    assert since_act.replies > 20 and since_act.rate_pct <= 2.0, since_act
    assert sandbox.state()["faults"] == []
    assert sandbox.journal()[-1] | {"ts": None} == {
        "ts": None,
        "system": "railway",
        "operation": "deploymentRollback",
        "args": {"id": target},
    }


async def test_fault_llm_outage_cured_by_fallback_model(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("llm-outage")
    primary = await llm.get_model_health.fn(blocks.llm)
    assert (primary.ok, primary.http_status, primary.error_type) == (False, 503, "server_error")
    assert primary.retryable
    fallback = await llm.get_model_health.fn(blocks.llm, blocks.llm.fallback_model)
    assert fallback.ok
    page = await status_pages.get_status_page.fn(blocks.pages, "openai")
    assert page.indicator == "major" and page.unresolved_incidents

    sick = await fresh_error_rate(blocks)
    assert sick.rate_pct > 50, sick
    distribution = await app_metrics.get_error_distribution.fn(blocks.db, window_s=WINDOW_S)
    assert distribution.samples and all(s.startswith("llm") for s in distribution.samples.values())
    traces = await langsmith.get_trace_errors.fn(blocks.langsmith, window_s=WINDOW_S)
    assert traces.llm_errored > 0 and traces.error_rate_pct > 50

    await railway.set_variables.fn(blocks.railway, {"DEFAULT_MODEL": blocks.llm.fallback_model})
    healed = await fresh_error_rate(blocks)
    assert healed.rate_pct <= 2.0, healed
    model = await railway.get_variable.fn(blocks.railway, "DEFAULT_MODEL")
    assert model.value == blocks.llm.fallback_model


async def test_fault_llm_rate_limit_cured_by_fallback_model(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("llm-rate-limit")
    primary = await llm.get_model_health.fn(blocks.llm)
    assert (primary.http_status, primary.error_code) == (429, "rate_limit_exceeded")
    assert primary.retryable and primary.retry_after_s == 2.0
    assert (await fresh_error_rate(blocks)).rate_pct > 50

    await railway.set_variables.fn(blocks.railway, {"DEFAULT_MODEL": blocks.llm.fallback_model})
    healed = await fresh_error_rate(blocks)
    assert healed.rate_pct <= 2.0, healed


async def test_llm_rate_limit_absorbed_by_request_queue(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("llm-rate-limit")
    assert (await fresh_error_rate(blocks)).rate_pct > 50
    await railway.set_variables.fn(blocks.railway, {"REQUEST_QUEUE_ENABLED": "true"})
    assert (await fresh_error_rate(blocks)).rate_pct <= 2.0
    queued = await langsmith.get_trace_latency.fn(blocks.langsmith, window_s=WINDOW_S)
    assert queued.p50_s > 3.0, "queued requests wait instead of failing"


async def test_fault_integration_outage_on_status_page_clears_with_the_fault(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("integration-outage", target="gorgias")
    gorgias = await status_pages.get_status_page.fn(blocks.pages, "gorgias")
    shopify = await status_pages.get_status_page.fn(blocks.pages, "shopify")
    assert not gorgias.operational and shopify.operational
    assert any(c.status == "major_outage" for c in gorgias.degraded_components)
    await asyncio.sleep(WINDOW_S + 0.4)
    distribution = await app_metrics.get_error_distribution.fn(blocks.db, window_s=WINDOW_S)
    assert "complaint" in distribution.by_intent  # the intent that calls Gorgias
    assert "integration: gorgias" in distribution.samples["complaint"]

    await roll_back_to_last_known_good(blocks)  # no platform mutation cures a vendor outage
    after_rollback = await status_pages.get_status_page.fn(blocks.pages, "gorgias")
    assert not after_rollback.operational

    sandbox.clear("integration-outage")
    assert (await status_pages.get_status_page.fn(blocks.pages, "gorgias")).operational
    assert (await fresh_error_rate(blocks)).rate_pct <= 2.0


async def test_fault_db_pool_exhausted_cured_by_raising_pool_size(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("db-pool-exhausted")
    sick = await get_api_readiness.fn(blocks.api)
    assert sick.status == Status.CRITICAL and sick.details["http_status"] == 503
    assert (await ready_checks(blocks))["database"] == "error"

    await railway.set_variables.fn(blocks.railway, {"DATABASE_POOL_SIZE": "30"}, skip_deploys=True)
    healed = await eventually(
        lambda: get_api_readiness.fn(blocks.api), lambda r: r.status == Status.OK
    )
    assert healed.status == Status.OK, healed.summary
    state = sandbox.state()
    assert state["pool_size"] == 30 and state["db_pool_max_size"] == 30


async def test_pool_exhausted_after_a_bigger_pool_went_back_to_its_size(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    """A pool raised to 30 (and filled), then reset to 10: exhausted means all of it again
    (a resized pool kept its 30 connections and handed out the extra ones)."""
    await railway.set_variables.fn(blocks.railway, {"DATABASE_POOL_SIZE": "30"}, skip_deploys=True)
    sandbox.inject("db-pool-exhausted")
    assert sandbox.state()["db_pool_held"] == 30
    sandbox.reset()
    sandbox.inject("db-pool-exhausted")
    assert sandbox.state()["db_pool_held"] == 10
    assert (await get_api_readiness.fn(blocks.api)).status == Status.CRITICAL


async def test_fault_db_pool_exhausted_cured_by_redeploy(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("db-pool-exhausted")
    assert sandbox.state()["db_pool_held"] == 10
    assert (await get_api_readiness.fn(blocks.api)).status == Status.CRITICAL

    live = await railway.get_service_instance.fn(blocks.railway)
    applied = await railway.redeploy_service.fn(blocks.railway, live.latest_deployment_id or "")
    assert applied.new_deployment_id and applied.new_deployment_id != live.latest_deployment_id
    healed = await eventually(
        lambda: get_api_readiness.fn(blocks.api), lambda r: r.status == Status.OK
    )
    assert healed.status == Status.OK, healed.summary


async def test_fault_db_down_cured_by_rds_failover(sandbox: SandboxHandle, blocks: Blocks) -> None:
    sandbox.inject("db-down")
    sick = await get_api_readiness.fn(blocks.api)
    assert sick.status == Status.CRITICAL
    assert await ready_checks(blocks) == {"database": "error", "redis": "ok"}
    with pytest.raises(TransientError):  # the runbook's `psql $DATABASE_URL` cannot connect
        await app_metrics.get_error_rate.fn(blocks.db)
    instance = await rds.get_db_instance.fn(blocks.rds)
    assert instance.multi_az and instance.status == "available"

    change = await rds.failover_db.fn(blocks.rds)
    assert change.status == "rebooting"
    done = await eventually(
        lambda: rds.get_db_instance.fn(blocks.rds), lambda i: i.status == "available"
    )
    assert done.availability_zone == instance.secondary_availability_zone
    healed = await eventually(  # the API's pool reconnects with backoff (1, 2, 4, 8, 16 s)
        lambda: get_api_readiness.fn(blocks.api), lambda r: r.status == Status.OK, timeout=40
    )
    assert healed.status == Status.OK, healed.summary


async def test_fault_slow_queries_in_pg_stat_activity_cured_by_restart(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("slow-queries")
    await asyncio.sleep(1.2)
    slow = await app_metrics.get_long_running_queries.fn(blocks.db, min_seconds=1)
    assert slow.count >= 3
    assert all("pg_sleep" in q.query and q.application == "support-api" for q in slow.queries)

    live = await railway.get_service_instance.fn(blocks.railway)
    await railway.restart_deployment.fn(blocks.railway, live.latest_deployment_id or "")
    gone = await eventually(
        lambda: app_metrics.get_long_running_queries.fn(blocks.db, min_seconds=0.1),
        lambda r: r.count == 0,
    )
    assert gone.count == 0, gone


async def test_fault_redis_slow_seen_as_latency_and_clears(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("redis-slow", seconds=30)
    slow = await get_redis_latency.fn(blocks.cache, blocks.policy, samples=3)
    assert slow.status == Status.CRITICAL and slow.details["avg_ms"] > 100
    assert await ready_checks(blocks) == {"database": "ok", "redis": "slow"}

    sandbox.clear("redis-slow")
    fast = await eventually(  # one scheduling stall on a busy machine is not "slow Redis"
        lambda: get_redis_latency.fn(blocks.cache, blocks.policy, samples=10),
        lambda r: r.status == Status.OK,
    )
    assert fast.status == Status.OK, fast.summary


async def test_fault_complete_outage_cured_by_rollback(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("complete-outage")
    assert (await get_api_health.fn(blocks.api)).status == Status.CRITICAL
    assert (await get_api_readiness.fn(blocks.api)).status == Status.CRITICAL
    listing = await railway.get_deployments.fn(blocks.railway)
    assert listing.items[0].status == "CRASHED"

    await roll_back_to_last_known_good(blocks)
    assert (await get_api_health.fn(blocks.api)).status == Status.OK
    ready = await eventually(
        lambda: get_api_readiness.fn(blocks.api), lambda r: r.status == Status.OK
    )
    assert ready.status == Status.OK, ready.summary


async def test_fault_high_load_cured_by_scaling_to_five_replicas(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    sandbox.inject("high-load")
    await asyncio.sleep(1.2)
    slow = await langsmith.get_trace_latency.fn(blocks.langsmith, window_s=1)
    assert slow.p99_s > 10 and slow.slow > 0, slow
    async with httpx.AsyncClient(base_url=blocks.api.base_url) as client:
        answer = (await client.post("/v1/chat", json={"intent": "product_question"})).json()
    assert answer["latency_ms"] > 4000

    await railway.scale_replicas.fn(blocks.railway, 5)
    assert (await railway.get_service_instance.fn(blocks.railway)).num_replicas == 5
    await asyncio.sleep(1.2)
    fast = await langsmith.get_trace_latency.fn(blocks.langsmith, window_s=1)
    assert fast.runs > 0 and fast.slow == 0 and fast.p99_s < 5, fast
