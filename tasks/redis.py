"""The platform's Redis (runbook: Health Checks → Check Redis, and §2's latency check)."""

from __future__ import annotations

import statistics
import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.app_redis import AppRedis
from blocks.policy import Policy
from runbook.domain import CheckResult, Status, classify
from tasks.observe import observe, result

COMPONENT = "redis"


@task(
    name="get-redis-ping",
    task_run_name="get-redis-ping",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_redis_ping(cache: AppRedis) -> CheckResult:
    """`redis-cli ping`."""

    async def probe() -> CheckResult:
        async with cache.get_client() as client:
            pong = await client.ping()
        status = Status.OK if pong else Status.CRITICAL
        return result("redis_ping", COMPONENT, status, "PONG" if pong else "no PONG")

    return await observe("redis_ping", COMPONENT, probe)


@task(
    name="get-redis-memory",
    task_run_name="get-redis-memory",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_redis_memory(cache: AppRedis, policy: Policy) -> CheckResult:
    """`INFO memory`: used memory against `maxmemory` (no limit set → ok)."""
    limit = policy.threshold("redis_memory_pct")

    async def probe() -> CheckResult:
        async with cache.get_client() as client:
            info = await client.info("memory")
        used = int(info.get("used_memory", 0))
        maximum = int(info.get("maxmemory", 0))
        details = {
            "used_memory": used,
            "used_memory_human": info.get("used_memory_human"),
            "maxmemory": maximum,
            "mem_fragmentation_ratio": info.get("mem_fragmentation_ratio"),
        }
        if maximum <= 0:
            return result(
                "redis_memory",
                COMPONENT,
                Status.OK,
                f"{info.get('used_memory_human')} used, no maxmemory set",
                **details,
            )
        pct = 100.0 * used / maximum
        return result(
            "redis_memory",
            COMPONENT,
            classify(pct, limit.warn, limit.critical),
            f"{pct:.0f} % of maxmemory",
            percent=round(pct, 1),
            **details,
        )

    return await observe("redis_memory", COMPONENT, probe)


@task(
    name="get-redis-keys",
    task_run_name="get-redis-keys",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_redis_keys(cache: AppRedis) -> CheckResult:
    """`DBSIZE` (informational)."""

    async def probe() -> CheckResult:
        async with cache.get_client() as client:
            keys = int(await client.dbsize())
        return result("redis_keys", COMPONENT, Status.OK, f"{keys} keys", keys=keys)

    return await observe("redis_keys", COMPONENT, probe)


@task(
    name="get-redis-latency",
    task_run_name="get-redis-latency",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_redis_latency(cache: AppRedis, policy: Policy, samples: int = 20) -> CheckResult:
    """Client-side PING round trips, as `redis-cli --latency` measures them."""
    limit = policy.threshold("redis_latency_ms")

    async def probe() -> CheckResult:
        times: list[float] = []
        async with cache.get_client() as client:
            await client.ping()  # connect outside the measurement
            for _ in range(samples):
                started = time.perf_counter()
                await client.ping()
                times.append((time.perf_counter() - started) * 1000)
        avg = statistics.fmean(times)
        # classified by the median: the PINGs share the event loop with the flow's other checks
        # (and a busy host's scheduler), so one stalled round trip must not make Redis the
        # bottleneck; a slow Redis slows every PING and moves the median as much as the mean
        typical = statistics.median(times)
        return result(
            "redis_latency",
            COMPONENT,
            classify(typical, limit.warn, limit.critical),
            f"median {typical:.2f} ms, avg {avg:.2f} ms, max {max(times):.2f} ms"
            f" over {samples} PINGs",
            min_ms=round(min(times), 3),
            avg_ms=round(avg, 3),
            median_ms=round(typical, 3),
            max_ms=round(max(times), 3),
        )

    return await observe("redis_latency", COMPONENT, probe)
