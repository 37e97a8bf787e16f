"""The simulated support API (`/health`, `/health/ready`, `POST /v1/chat`, `GET /v1/store` for a
store's API key), its traffic generator, and the real side effects of the data-store faults.

The API reaches Postgres and Redis only through the sandbox's TCP proxies, with a psycopg pool of
`DATABASE_POOL_SIZE` connections — so `db-down`, `redis-slow` and `db-pool-exhausted` are felt
exactly as a real service would feel them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox import store_keys
from sandbox.appdb import PoolHog, SlowQueries, TrafficWriter
from sandbox.behaviour import ChatOutcome, record_chat, simulate_chat
from sandbox.platform import Platform, now
from sandbox.proxy import TcpProxy

REDIS_DELAY_S = 0.15
REDIS_READY_SLOW_S = 0.25  # a PING slower than this fails readiness
SLOW_QUERY_LATENCY_S = 6.0  # slow statements push P99 past the 5 s warn threshold
REDIS_SLOW_LATENCY_S = 0.6
TIME_SCALE = 0.25  # a chat answered over HTTP sleeps this share of its simulated latency


class SupportApi:
    def __init__(
        self,
        platform: Platform,
        *,
        api_db_url: str,
        direct_db_url: str,
        api_redis_url: str,
        pg_proxy: TcpProxy,
        redis_proxy: TcpProxy,
        traffic_rps: float,
    ) -> None:
        self.p = platform
        self.api_db_url = api_db_url
        self.direct_db_url = direct_db_url
        self.pg_proxy = pg_proxy
        self.redis_proxy = redis_proxy
        self.traffic_rps = traffic_rps
        self.pool: AsyncConnectionPool[Any] = self._new_pool()
        self.redis = aioredis.Redis.from_url(
            api_redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.writer = TrafficWriter(direct_db_url)
        self.hog = PoolHog()
        self.slow = SlowQueries(direct_db_url)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        platform.listeners.append(self._on_event)

    @property
    def pool_size(self) -> int:
        return max(1, int(self.p.variables.get("DATABASE_POOL_SIZE", "10") or 10))

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        return AsyncConnectionPool(
            self.api_db_url,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=1.5,
            kwargs={"autocommit": True, "connect_timeout": 2, "application_name": "support-api"},
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=3600,
        )

    async def start(self) -> None:
        await self.pool.open(wait=False)
        self._tasks = [asyncio.create_task(self._traffic()), asyncio.create_task(self._expiry())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self.writer.flush()
        await self.writer.close()
        await self.hog.release()
        await self.slow.stop()
        await self.pool.close(timeout=2)
        await self.redis.aclose()

    # -- faults with real effects ---------------------------------------------------------------
    async def apply(self, fault: str) -> None:
        if fault == "db-pool-exhausted":
            await self.pool.open(wait=False)  # a pool just swapped in (below) may not be yet
            await self.hog.grab(self.pool, self.pool.max_size)
        elif fault == "db-down":
            self.pg_proxy.set_mode("refuse")
        elif fault == "slow-queries":
            await self.slow.start()
        elif fault == "redis-slow":
            self.redis_proxy.set_mode("delay", REDIS_DELAY_S)
        elif fault == "key-leak":
            leak = self.p.active("key-leak")
            stores = store_keys.leak_targets(leak.target if leak else None)
            await store_keys.write_leak(self.direct_db_url, stores)

    async def undo(self, fault: str) -> None:
        if fault == "db-pool-exhausted":
            await self.hog.release()
        elif fault == "db-down":
            self.pg_proxy.set_mode("pass")
        elif fault == "slow-queries":
            await self.slow.stop()
        elif fault == "redis-slow":
            self.redis_proxy.set_mode("pass")

    def _on_event(self, event: str) -> None:
        loop = asyncio.get_running_loop()
        kind, _, fault = event.partition(":")
        if kind in {"clear", "cured"}:
            self._spawn(loop.create_task(self.undo(fault)))
        elif event == "restart":  # a new process: its leaked connections and statements end
            self.p.cure("db-pool-exhausted")
            self.p.cure("slow-queries")
            self._spawn(loop.create_task(self._restart_pool()))
        elif event == "pool-size":
            if self.pool_size < self.pool.max_size:
                # smaller: a new pool, as the app's restart makes one (psycopg's resize keeps
                # the extra connections open and hands them out: "exhausted" would not be)
                old, self.pool = self.pool, self._new_pool()
                self._spawn(loop.create_task(self._swap_pool(old)))
            else:
                self._spawn(loop.create_task(self.pool.resize(1, self.pool_size)))
            if self.pool_size > len(self.hog.held):
                self.p.cure("db-pool-exhausted")

    def _spawn(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart_pool(self) -> None:
        await self.hog.release()
        old, self.pool = self.pool, self._new_pool()
        await self._swap_pool(old)

    async def _swap_pool(self, old: AsyncConnectionPool[Any]) -> None:
        await self.pool.open(wait=False)
        await old.close(timeout=2)

    # -- what requests experience ---------------------------------------------------------------
    def db_error(self) -> str | None:
        if self.pg_proxy.mode == "refuse":
            return "database: connection refused (could not connect to server at 5432)"
        if self.hog.held and len(self.hog.held) >= self.pool.max_size:
            return (
                f"database: connection pool exhausted (all {self.pool.max_size} connections"
                " in use, timed out after 1.5 s)"
            )
        return None

    def extra_latency(self) -> float:
        extra = 0.0
        if self.slow.conns:
            extra += SLOW_QUERY_LATENCY_S
        if self.redis_proxy.mode == "delay":
            extra += REDIS_SLOW_LATENCY_S
        return extra

    def _simulate(self, intent: str | None = None) -> ChatOutcome:
        outcome = simulate_chat(
            self.p, intent, db_error=self.db_error(), extra_latency_s=self.extra_latency()
        )
        started = now()
        status = 200 if outcome.error is None else _http_status(outcome.error)
        record_chat(self.p, outcome, started, status)
        self.writer.add(outcome)
        return outcome

    async def _traffic(self) -> None:
        tick, last = 0.25, time.monotonic()
        while True:
            await asyncio.sleep(tick)
            elapsed, last = time.monotonic() - last, time.monotonic()  # late ticks catch up
            n = 0 if self.p.maintenance() else _poisson(self.traffic_rps * min(elapsed, 2.0))
            for _ in range(n):
                self._simulate()
            try:
                await self.writer.flush()
            except Exception:  # drop the batch; reconnect on the next tick
                self.writer.pending.clear()
                await self.writer.close()

    async def _expiry(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.p.expire()

    # -- HTTP -------------------------------------------------------------------------------------
    def _down(self) -> JSONResponse | None:
        dep = self.p.current
        if dep.defect == "outage":
            return JSONResponse(
                {"status": "unavailable", "error": "no healthy replicas"}, status_code=503
            )
        return None

    async def health(self, request: Request) -> JSONResponse:
        extra = {"maintenance": True} if self.p.maintenance() else {}
        return self._down() or JSONResponse({"status": "ok", **extra})

    async def ready(self, request: Request) -> JSONResponse:
        if down := self._down():
            return down
        checks: dict[str, str] = {}
        errors: dict[str, str] = {}
        try:
            async with self.pool.connection(timeout=1.5) as conn:
                await conn.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = "error"
            errors["database"] = _reason(exc)
        try:
            started = time.perf_counter()
            await asyncio.wait_for(self.redis.ping(), 2.0)
            slow = time.perf_counter() - started > REDIS_READY_SLOW_S
            checks["redis"] = "slow" if slow else "ok"
        except Exception as exc:
            checks["redis"] = "error"
            errors["redis"] = _reason(exc)
        healthy = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ok" if healthy else "error", "checks": checks}
        if errors:
            body["errors"] = errors
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def chat(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
            intent = body.get("intent") if isinstance(body, dict) else None
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if down := self._down():
            return down
        if self.p.maintenance():
            return JSONResponse(
                {"error": "down for scheduled maintenance"},
                status_code=503,
                headers={"Retry-After": "600"},
            )
        outcome = self._simulate(intent if isinstance(intent, str) else None)
        with contextlib.suppress(Exception):
            await self.redis.set(f"sandbox:conv:{random.getrandbits(32)}", "1", ex=60)
        await asyncio.sleep(min(outcome.latency_s * TIME_SCALE, 3.0))
        if outcome.error:
            return JSONResponse(
                {"error": outcome.error, "intent": outcome.intent},
                status_code=_http_status(outcome.error),
            )
        return JSONResponse(
            {
                "reply": "Happy to help!",
                "intent": outcome.intent,
                "model": outcome.model,
                "latency_ms": int(outcome.latency_s * 1000),
            }
        )


def _http_status(error: str) -> int:
    if error.startswith(("database", "application: worker")):
        return 503
    if error.startswith(("llm", "integration")):
        return 502
    return 500


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _poisson(mean: float) -> int:
    n, limit, product = 0, pow(2.718281828, -mean), random.random()
    while product > limit:
        n += 1
        product *= random.random()
    return n


# -- store API keys --------------------------------------------------------------------------------
def _bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


class StoreAuth:
    """`GET /v1/store` (the API's store-authenticated surface) and the control endpoint that
    hands a store a key of its own (what the store's client holds: tests, game days)."""

    def __init__(self, api: SupportApi) -> None:
        self.api = api

    async def whoami(self, request: Request) -> JSONResponse:
        """`GET /v1/store` with `Authorization: Bearer <store key>` → the key's store, or 401.
        Every attempt leaves an access-log row."""
        if down := self.api._down():
            return down
        key = _bearer(request)
        if key is None:
            return JSONResponse({"error": "missing store API key"}, status_code=401)
        ip = request.client.host if request.client else "127.0.0.1"
        try:
            async with self.api.pool.connection(timeout=1.5) as conn:
                store, name = await store_keys.authenticate(conn, key)
                status = 200 if store else 401
                await store_keys.log_access(conn, store, key, ip, "GET", "/v1/store", status)
        except Exception as exc:
            return JSONResponse({"error": f"database: {_reason(exc)}"}, status_code=503)
        if store is None:
            return JSONResponse({"error": "invalid API key"}, status_code=401)
        return JSONResponse({"store_id": store, "name": name})

    async def issue_client_key(self, request: Request) -> JSONResponse:
        """`POST /control/store-keys {"store_id"}`: a new live key for the store, returned once
        (the game master's hand, not journaled)."""
        try:
            body = json.loads(await request.body() or b"{}")
            store = body["store_id"]
            if not isinstance(store, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"store_id": "..."}'}, 400)
        async with await psycopg.AsyncConnection.connect(
            self.api.direct_db_url, autocommit=True
        ) as conn:
            if not await store_keys.store_exists(conn, store):
                return JSONResponse({"error": f"unknown store {store!r}"}, 404)
            key = await store_keys.insert_key(conn, store)
        return JSONResponse({"store_id": store, "key": key})
