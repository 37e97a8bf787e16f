"""Health checks against the real local PostgreSQL and Redis, and a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from pydantic import SecretStr

from blocks import AppDatabase, AppRedis, Policy, SupportApi
from runbook.domain import Status
from tasks import postgres, redis, support_api
from tests.tasks.netfakes import closed_port, scripted_http_server, silent_listener

pytestmark = pytest.mark.integration

POLICY = Policy()


@pytest.fixture
async def busy_database(pg_url: str) -> AsyncIterator[str]:
    """An idle session, an idle-in-transaction session, an active one and a big table."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as setup:
        await setup.execute("DROP TABLE IF EXISTS big_orders")
        await setup.execute(
            "CREATE TABLE big_orders AS SELECT g AS id, repeat('x', 200) AS payload"
            " FROM generate_series(1, 50000) g"
        )
        await setup.execute("CREATE TABLE IF NOT EXISTS small_notes (id int)")
    idle = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    stuck = await psycopg.AsyncConnection.connect(pg_url)
    await stuck.execute("SELECT 1")  # opens a transaction and leaves it open
    active = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    sleeper = asyncio.create_task(active.execute("SELECT pg_sleep(3)"))
    await asyncio.sleep(0.3)
    try:
        yield pg_url
    finally:
        await sleeper
        for conn in (idle, stuck, active):
            await conn.close()


async def test_postgres_sessions_and_big_table_are_reported(busy_database: str) -> None:
    db = AppDatabase(url=SecretStr(busy_database))
    by_state = await postgres.get_pg_connections_by_state.fn(db, POLICY)
    assert by_state.status is Status.OK
    states = by_state.details["by_state"]
    assert states.get("active", 0) >= 2  # the sleeper and the check itself
    assert states.get("idle", 0) >= 1
    assert by_state.details["idle_in_transaction"] >= 1
    assert "idle in transaction" in by_state.summary

    count = await postgres.get_pg_connections.fn(db, POLICY)
    assert count.status is Status.OK
    assert count.details["clients"] >= 4
    assert count.details["max_connections"] > 0

    sizes = await postgres.get_pg_table_sizes.fn(db)
    assert sizes.details["tables"][0]["table"] == "big_orders"
    assert sizes.details["tables"][0]["bytes"] > 5_000_000
    assert "big_orders" in sizes.summary


async def test_many_idle_in_transaction_sessions_are_critical(pg_url: str) -> None:
    strict = Policy(thresholds={"idle_in_transaction": {"warn": 0, "critical": 1}})
    sessions = []
    for _ in range(2):
        conn = await psycopg.AsyncConnection.connect(pg_url)
        await conn.execute("SELECT 1")
        sessions.append(conn)
    try:
        result = await postgres.get_pg_connections_by_state.fn(
            AppDatabase(url=SecretStr(pg_url)), strict
        )
    finally:
        for conn in sessions:
            await conn.close()
    assert result.status is Status.CRITICAL


async def test_missing_pg_stat_statements_is_unavailable_not_an_error(pg_url: str) -> None:
    result = await postgres.get_pg_slow_queries.fn(AppDatabase(url=SecretStr(pg_url)), POLICY)
    assert result.status is Status.UNAVAILABLE
    assert "pg_stat_statements" in result.summary


async def test_closed_postgres_port_is_unavailable_with_reason() -> None:
    db = AppDatabase(url=SecretStr(f"postgresql://postgres@127.0.0.1:{closed_port()}/x"))
    results = await asyncio.gather(
        postgres.get_pg_connections.fn(db, POLICY),
        postgres.get_pg_connections_by_state.fn(db, POLICY),
        postgres.get_pg_slow_queries.fn(db, POLICY),
        postgres.get_pg_table_sizes.fn(db),
    )
    for result in results:
        assert result.status is Status.UNAVAILABLE
        assert "refused" in result.summary.lower()


async def test_postgres_that_never_answers_is_unavailable_after_the_timeout() -> None:
    with silent_listener() as port:
        db = AppDatabase(
            url=SecretStr(f"postgresql://postgres@127.0.0.1:{port}/x"), connect_timeout_s=1
        )
        result = await postgres.get_pg_connections.fn(db, POLICY)
    assert result.status is Status.UNAVAILABLE
    assert "timeout" in result.summary.lower() or "timed out" in result.summary.lower()


async def test_redis_checks_report_ping_memory_keys_latency(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    await client.mset({f"k{i}": "v" for i in range(25)})
    await client.aclose()
    cache = AppRedis(url=SecretStr(redis_url))
    ping, memory, keys, latency = await asyncio.gather(
        redis.get_redis_ping.fn(cache),
        redis.get_redis_memory.fn(cache, POLICY),
        redis.get_redis_keys.fn(cache),
        redis.get_redis_latency.fn(cache, POLICY),
    )
    assert ping.status is Status.OK and ping.summary == "PONG"
    assert memory.status is Status.OK and memory.details["used_memory"] > 0
    assert keys.details["keys"] >= 25
    assert latency.status is Status.OK
    assert 0 < latency.details["avg_ms"] < POLICY.threshold("redis_latency_ms").warn


async def test_closed_and_silent_redis_are_unavailable_with_reason() -> None:
    closed = AppRedis(url=SecretStr(f"redis://127.0.0.1:{closed_port()}/0"))
    result = await redis.get_redis_ping.fn(closed)
    assert result.status is Status.UNAVAILABLE
    assert "refused" in result.summary.lower()
    with silent_listener() as port:
        silent = AppRedis(url=SecretStr(f"redis://127.0.0.1:{port}/0"), timeout_s=0.5)
        result = await redis.get_redis_latency.fn(silent, POLICY)
    assert result.status is Status.UNAVAILABLE
    assert "timeout" in result.summary.lower() or "timed out" in result.summary.lower()


@pytest.mark.parametrize(
    ("prefix", "health", "ready"),
    [
        ("ok", Status.OK, Status.OK),
        ("down", Status.CRITICAL, Status.CRITICAL),  # 503
        ("slow", Status.CRITICAL, Status.CRITICAL),  # times out
        ("garbage", Status.WARN, Status.WARN),  # 200 but not a health document
    ],
)
async def test_http_health_endpoint_classification(
    prefix: str, health: Status, ready: Status
) -> None:
    with scripted_http_server() as base:
        api = SupportApi(base_url=f"{base}/{prefix}", timeout_s=0.5)
        got_health, got_ready = await asyncio.gather(
            support_api.get_api_health.fn(api), support_api.get_api_readiness.fn(api)
        )
    assert got_health.status is health, got_health.summary
    assert got_ready.status is ready, got_ready.summary
    if prefix == "slow":
        assert "no answer within 0.5 s" in got_health.summary
    if prefix == "down":
        assert got_health.summary == "HTTP 503"


async def test_api_on_a_closed_port_is_unavailable() -> None:
    api = SupportApi(base_url=f"http://127.0.0.1:{closed_port()}")
    result = await support_api.get_api_response_time.fn(api, POLICY)
    assert result.status is Status.UNAVAILABLE
    assert "refused" in result.summary
