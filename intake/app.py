"""The intake ASGI app: authenticate → parse → route → coalesce + persist → 202 → dispatch.

    POST /alerts/{alertmanager,grafana,sentry,pagerduty,generic}
    GET  /healthz   GET /metrics

Answers: 202 once every alert of the delivery is committed to Postgres; 400 malformed JSON, or
a value the database refuses (too long for a column, out of range, a bad byte sequence: the
error names it, and only this delivery is refused, never the others committed with it); 401
missing/bad credentials; 413 body over the limit; 415 not JSON; 422 wrong shape (the field is
named); 503 only when the alert cannot be persisted (the sender retries). Error bodies are one
line of JSON, never a traceback; logs never contain credentials or signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from intake import auth
from intake.dispatcher import OUTBOX_STATS, Dispatcher
from intake.metrics import CONTENT_TYPE, IntakeMetrics
from intake.parsers import PARSERS, SOURCES, Parsed, ShapeError
from intake.persister import REFUSED, Persister, refusal
from intake.routes import Router, RoutingTable, load_table
from intake.settings import IntakeSettings
from runbook import opsdb
from runbook.alerts import Alert
from runbook.errors import ConfigurationError
from runbook.incidents import Outcome, Placement, Recorded

log = logging.getLogger("intake")

_STATUS = {
    Outcome.NEW: "new",
    Outcome.COALESCED: "coalesced",
    Outcome.REOPENED: "coalesced",
    Outcome.DUPLICATE: "coalesced",
    Outcome.SUPPRESSED: "suppressed",
    Outcome.RESOLVED: "resolved",
}


_DB_DOWN = (psycopg.Error, PoolTimeout, OSError)


class Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def json_response(status: int, body: dict[str, Any], **headers: str) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class Intake:
    """Holds what the request handlers share: settings, routing table, pool, metrics."""

    def __init__(self, settings: IntakeSettings, table: RoutingTable | None = None) -> None:
        self.settings = settings
        # a table given by the caller is final (`runbook intake` loads the block itself, so a
        # bad one stops it with one line before serving); else the file, then the block
        self.table_given = table is not None
        self.table = table or load_table(settings.intake_routes_file)
        self.router = Router(self.table, deployment=settings.deployment_name)
        self.metrics = IntakeMetrics()
        self.pool: AsyncConnectionPool | None = None
        self.dispatcher: Dispatcher | None = None
        self.persister: Persister | None = None
        self.db_error: str | None = None  # why the ops database could not be reached at start
        self._dispatch_task: asyncio.Task[None] | None = None

    # --- request pipeline ---------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.intake_max_body
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise Rejected(413, "too_large", f"body over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, "too_large", f"body over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def authenticate(self, source: str, request: Request, body: bytes) -> None:
        s, headers, now = self.settings, request.headers, time.time()
        window = s.intake_replay_window_s
        try:
            if source == "alertmanager":
                auth.check_alertmanager(headers, s.alertmanager_token)
            elif source == "grafana":
                auth.check_grafana(
                    headers,
                    body,
                    s.grafana_secret,
                    timestamp_header=s.grafana_timestamp_header,
                    now=now,
                    window_s=window,
                )
            elif source == "sentry":
                auth.check_sentry(headers, body, s.sentry_secret)
            elif source == "pagerduty":
                auth.check_pagerduty(headers, body, s.pagerduty_secret)
            else:
                auth.check_generic(headers, body, s.generic_secret, now=now, window_s=window)
        except auth.Unauthorized as exc:
            raise Rejected(401, exc.reason, "missing or invalid credentials") from None

    @staticmethod
    def decode(source: str, request: Request, body: bytes) -> Parsed:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise Rejected(415, "not_json", "Content-Type must be application/json")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Rejected(400, "malformed_json", "body is not valid JSON") from None
        try:
            return PARSERS[source](payload, request.headers)
        except ShapeError as exc:
            raise Rejected(422, "wrong_shape", str(exc)[:500]) from None
        except (ValueError, TypeError, KeyError) as exc:  # defensive: never a 5xx for input
            log.warning("unparseable %s payload: %s", source, type(exc).__name__)
            raise Rejected(422, "wrong_shape", "body: cannot be parsed") from None

    async def persist(self, placed: list[tuple[Alert, Placement]]) -> list[Recorded]:
        if not placed:
            return []
        if self.persister is None:
            raise Rejected(503, "not_ready", "intake is starting; retry")
        try:
            return await self.persister.record(placed)
        except REFUSED as exc:  # this delivery's own content: the others of its batch went in
            raise Rejected(400, "refused", f"cannot store this delivery: {refusal(exc)}") from None
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("cannot persist alert: %s", type(exc).__name__)
            raise Rejected(503, "cannot_persist", "cannot persist the alert now; retry") from None

    def endpoint(self, source: str) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            return await self.receive(source, request)

        return receive

    async def receive(self, source: str, request: Request) -> Response:
        started = time.perf_counter()
        m = self.metrics
        m.child(m.received, source).inc()
        try:
            body = await self.read_body(request)
            self.authenticate(source, request, body)
            parsed = self.decode(source, request, body)
            placed = [(a, self.router(a)) for a in parsed.alerts]
            recorded = await self.persist(placed)
        except Rejected as exc:
            m.child(m.rejected, source, exc.reason).inc()
            log.info("rejected %s delivery: %d %s", source, exc.status, exc.reason)
            extra = {"Retry-After": "5"} if exc.status == 503 else {}
            return json_response(exc.status, {"error": exc.message}, **extra)
        items = []
        for (alert, placement), rec in zip(placed, recorded, strict=True):
            status = _STATUS[rec.outcome]
            if status == "new" and placement.route == self.table.fallback.name:
                status = "triaged"
            m.child(m.accepted, source, status).inc()
            if rec.outcome in (Outcome.COALESCED, Outcome.REOPENED, Outcome.DUPLICATE):
                m.child(m.coalesced, source).inc()
            items.append(
                {
                    "incident": rec.incident_id,
                    "status": status,
                    "outcome": rec.outcome.value,
                    "route": placement.route,
                    "target": placement.target,
                    "alert": alert.name,
                    "alert_count": rec.alert_count,
                }
            )
        if self.dispatcher and any(r.outcome in (Outcome.NEW, Outcome.REOPENED) for r in recorded):
            self.dispatcher.wake()
        m.child(m.ack_seconds, source).observe(time.perf_counter() - started)
        if not items:
            return json_response(
                202,
                {"incident": None, "status": "ignored", "reason": parsed.ignored or "no alerts"},
            )
        answer: dict[str, Any] = {**items[0], "alerts": items}
        if parsed.truncated:
            answer["truncated_alerts"] = parsed.truncated
        return json_response(202, answer)

    # --- operations endpoints -----------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        if self.pool is None:
            if self.db_error is not None:
                return json_response(503, {"status": "degraded", "database": "unreachable"})
            return json_response(503, {"status": "starting"})
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout):
            return json_response(503, {"status": "degraded", "database": "unreachable"})
        return json_response(200, {"status": "ok", "database": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        if self.pool is not None:
            with contextlib.suppress(psycopg.Error, PoolTimeout):
                async with self.pool.connection(timeout=2) as conn:
                    cur = await conn.execute(OUTBOX_STATS)
                    row = await cur.fetchone()
                    depth, oldest = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
                    self.metrics.outbox_depth.set(depth)
                    self.metrics.oldest_undispatched.set(oldest)
        return Response(self.metrics.render(), 200, media_type=CONTENT_TYPE)

    # --- lifecycle ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.settings.intake_routes_block and not self.table_given:
            from intake.routes_block import load_block_table

            try:
                self.table = await load_block_table(self.settings.intake_routes_block, self.table)
            except ConfigurationError as exc:
                log.error("error: %s", exc)  # one line; the server refuses to start
                raise
            self.router = Router(self.table, deployment=self.settings.deployment_name)
        connecting: asyncio.Task[None] | None = None
        try:
            await self._open()  # the usual case: ready before the first delivery
        except _DB_DOWN as exc:
            self._unreachable(exc)
            connecting = asyncio.create_task(self._reconnect(), name="intake-connect")
        try:
            yield
        finally:
            if connecting is not None:
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
            if self._dispatch_task is not None:
                self._dispatch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._dispatch_task
                self._dispatch_task = None
            if self.persister is not None:
                await self.persister.stop()
                self.persister = None
            if self.pool is not None:
                await self.pool.close()
                self.pool = None

    def _unreachable(self, exc: BaseException) -> None:
        self.db_error = type(exc).__name__
        log.warning("ops database unreachable (%s); answering 503, retrying", self.db_error)

    async def _reconnect(self) -> None:
        """While the ops database is unreachable the intake still serves: deliveries get 503
        (the senders retry), /healthz says why, and this keeps trying with backoff."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self._open()
                log.info("ops database reachable again; accepting alerts")
                return
            except _DB_DOWN as exc:
                self._unreachable(exc)
                delay = min(delay * 2, 10.0)

    async def _open(self) -> None:
        """Open the pool (migrating), then start persisting and dispatching."""
        url = self.settings.ops_database_url
        pool = await opsdb.open_pool(
            url.get_secret_value() if url else None, max_size=self.settings.intake_db_pool_size
        )
        self.db_error = None
        self.pool = pool
        persister = Persister(
            pool,
            cooldown_s=self.settings.intake_cooldown_s,
            writers=self.settings.intake_persist_writers,
            max_batch=self.settings.intake_persist_batch,
            timeout_s=self.settings.intake_db_timeout_s,
        )
        persister.start()
        self.persister = persister
        if self.settings.intake_dispatch:
            self.dispatcher = Dispatcher(pool, self.settings, self.metrics)
            self._dispatch_task = asyncio.create_task(
                self.dispatcher.run(), name="intake-dispatcher"
            )


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_response(404, {"error": "not found"})


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return json_response(405, {"error": "method not allowed"})


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("internal error: %s", type(exc).__name__)
    return json_response(500, {"error": "internal error"})


def create_app(
    settings: IntakeSettings | None = None, *, table: RoutingTable | None = None
) -> Starlette:
    """The intake ASGI app (uvicorn: `--factory intake.app:create_app`)."""
    intake = Intake(settings or IntakeSettings(), table)
    routes = [Route(f"/alerts/{s}", intake.endpoint(s), methods=["POST"]) for s in SOURCES]
    routes += [
        Route("/healthz", intake.healthz, methods=["GET"]),
        Route("/metrics", intake.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=intake.lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _server_error},
    )
    app.state.intake = intake
    return app
