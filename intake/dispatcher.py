"""The dispatcher: turns queued incident actions (the outbox) into flow runs and Slack messages.

Each outbox row is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction held while the
action runs, so across any number of intake processes one row is worked on by one process at a
time; the flow run is created with `idempotency_key=<incident id>`, so a crash between creating
the run and marking the row done cannot create a second run. A failed attempt (Prefect API down,
Slack 5xx) is rescheduled with exponential backoff; rows left by a killed process are picked up at
start-up and by every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.deployments.flow_runs import arun_deployment
from prefect.settings import PREFECT_API_URL
from psycopg_pool import AsyncConnectionPool

from blocks.slack import Slack
from intake.metrics import IntakeMetrics
from intake.settings import IntakeSettings
from runbook.incidents import Conn, get_incident
from runbook.settings import get_settings

log = logging.getLogger("intake.dispatcher")

_CLAIM = (
    "SELECT incident_id, action, target, attempts FROM runbook.outbox"
    " WHERE done_at IS NULL AND next_attempt_at <= now()"
    " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_DONE = (
    "UPDATE runbook.outbox SET done_at = now(), result = %s, attempts = attempts + 1,"
    " last_error = NULL WHERE incident_id = %s AND action = %s"
)
_RETRY = (
    "UPDATE runbook.outbox SET attempts = attempts + 1, last_error = %s,"
    " next_attempt_at = now() + make_interval(secs => %s) WHERE incident_id = %s AND action = %s"
)
DEPTH = "SELECT count(*) FROM runbook.outbox WHERE done_at IS NULL"


class DispatchFailed(Exception):
    """An attempt failed; `str()` is one safe line for logs and the outbox row."""


@dataclass(frozen=True)
class Job:
    incident_id: str
    action: str
    target: str
    attempts: int


class Dispatcher:
    def __init__(
        self, pool: AsyncConnectionPool, settings: IntakeSettings, metrics: IntakeMetrics
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something new was queued: look now rather than at the next poll."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        base = self.settings.intake_dispatch_backoff_s * (2 ** min(attempts, 20))
        return float(min(base, self.settings.intake_dispatch_backoff_max_s))

    async def run(self) -> None:
        """Dispatch until cancelled. Survives database outages (retries at the poll pace)."""
        while True:
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: try again at the next poll
                log.warning("dispatcher: %s", _one_line(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.intake_dispatch_poll_s)
            self._wake.clear()

    async def drain(self) -> int:
        """Work the due rows with a few concurrent workers; returns how many were attempted."""
        counts = await asyncio.gather(
            *(self._worker() for _ in range(self.settings.intake_dispatch_concurrency))
        )
        return sum(counts)

    async def _worker(self) -> int:
        done = 0
        while await self.dispatch_one():
            done += 1
        return done

    async def dispatch_one(self) -> bool:
        """Claim one due row and attempt it; False when none is due."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_CLAIM)
            row = await cur.fetchone()
            if row is None:
                return False
            job = Job(str(row[0]), str(row[1]), str(row[2]), int(row[3]))
            try:
                result = await self._perform(conn, job)
            except Exception as exc:
                delay = self.backoff(job.attempts)
                message = _one_line(exc)
                self.metrics.dispatch_failures.labels(job.action).inc()
                log.warning(
                    "dispatch %s for incident %s failed (attempt %d, retry in %.1fs): %s",
                    job.action,
                    job.incident_id,
                    job.attempts + 1,
                    delay,
                    message,
                )
                await conn.execute(_RETRY, (message, delay, row[0], job.action))
            else:
                self.metrics.dispatched.labels(job.action).inc()
                log.info("dispatched %s for incident %s: %s", job.action, job.incident_id, result)
                await conn.execute(_DONE, (result, row[0], job.action))
            return True

    async def _perform(self, conn: Conn, job: Job) -> str:
        if job.action == "flow":
            return await create_flow_run(job.target, job.incident_id)
        if job.action == "slack":
            return await notify_slack(conn, job.incident_id)
        raise DispatchFailed(f"unknown action {job.action!r}")


async def create_flow_run(deployment: str, incident_id: str) -> str:
    """`run_deployment(timeout=0, idempotency_key=<incident id>)`: the same run on every retry."""
    if not PREFECT_API_URL.value():
        raise DispatchFailed("PREFECT_API_URL is not set")
    try:
        async with get_client() as client:
            flow_run = await arun_deployment(
                deployment,
                client=client,
                parameters={"incident_id": incident_id},
                timeout=0,
                idempotency_key=incident_id,
                as_subflow=False,
            )
    except httpx.HTTPError as exc:
        raise DispatchFailed(f"Prefect API unreachable: {type(exc).__name__}") from None
    return str(flow_run.id)


async def notify_slack(conn: Conn, incident_id: str) -> str:
    """Post the triage message to the Slack incoming webhook (a `Slack` block, else settings)."""
    incident = await get_incident(conn, incident_id)
    if incident is None:
        return "skipped: incident not found"
    try:
        slack: Any = await Slack.resolve()
    except Exception:  # Prefect API down: fall back to the environment
        slack = Slack.from_settings(get_settings())
    url = slack.webhook_url.get_secret_value()
    if not url:
        log.warning("triage incident %s: no Slack webhook configured", incident_id)
        return "skipped: slack not configured"
    text = (
        f":rotating_light: Triage needed — no runbook flow handles alert *{incident.title}*"
        f" ({incident.severity.value}, from {', '.join(incident.sources)}) on"
        f" {incident.target}: {incident.summary} — incident {incident.id}"
    )
    try:
        async with slack.get_client() as http:
            response = await http.post(url, json={"text": text[:3000]})
    except httpx.HTTPError as exc:
        raise DispatchFailed(f"Slack unreachable: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise DispatchFailed(f"Slack answered {response.status_code}")
    if response.status_code >= 400:
        # permanent (invalid_payload, channel_not_found, archived): record it, do not loop
        log.warning("triage incident %s: Slack refused (%d)", incident_id, response.status_code)
        return f"failed: slack {response.status_code}"
    return "slack ok"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]
