"""The dispatcher: turns queued incident actions (the outbox) into flow runs, Slack messages and
PagerDuty pages.

A row is claimed with a session-level advisory lock on its key, taken on the connection that
works on it: across any number of intake processes one process works on a row at a time, a
killed process's claim ends with its connection, and no row lock is held while Prefect or Slack
is called (a slow Prefect API never delays the persisting of alerts). The flow run is created
with `idempotency_key=<incident id>`: a crash between creating the run and marking the row done
cannot create a second run. A failed attempt (Prefect API down, Slack 5xx) is rescheduled with
exponential backoff — never sooner than the `Retry-After` a rate-limited Slack or PagerDuty
asked for (up to 5 minutes); rows left by a killed process are picked up by any intake process,
at start-up or at any poll.

A flow whose deployment does not exist (Prefect answers 404) will not appear by retrying: the
row is finished (`failed: no deployment NAME`) and, in the same transaction, a `slack` triage
row and a `page` row are queued for the incident — durable like every row, so a restart loses
neither, and a human hears of it within a poll or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx
from prefect.client.orchestration import get_client
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from psycopg_pool import AsyncConnectionPool

from intake.metrics import IntakeMetrics
from intake.notices import DispatchFailed, notify_slack, page
from intake.settings import IntakeSettings
from runbook.incidents import Conn, get_incident

__all__ = ["OUTBOX_STATS", "DeploymentMissing", "DispatchFailed", "Dispatcher", "create_flow_run"]

log = logging.getLogger("intake.dispatcher")

RETRY_AFTER_MAX_S = 300.0  # the longest `Retry-After` of Slack/PagerDuty we wait out
_LOCK_SPACE = 0x494E544B  # "INTK": advisory lock class of outbox rows
_DUE = (
    "SELECT incident_id, action, target, attempts FROM runbook.outbox"
    " WHERE done_at IS NULL AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT %s"
)
_LOCK = "SELECT pg_try_advisory_lock(%s::int4, hashtext(%s))"
_UNLOCK = "SELECT pg_advisory_unlock(%s::int4, hashtext(%s))"
_STILL_DUE = (
    "SELECT attempts FROM runbook.outbox WHERE incident_id = %s AND action = %s"
    " AND done_at IS NULL AND next_attempt_at <= now()"
)
_DONE = (
    "UPDATE runbook.outbox SET done_at = now(), result = %s, attempts = attempts + 1,"
    " last_error = NULL WHERE incident_id = %s AND action = %s AND done_at IS NULL"
)
_FAILED = (
    "UPDATE runbook.outbox SET done_at = now(), result = %s, attempts = attempts + 1,"
    " last_error = %s WHERE incident_id = %s AND action = %s AND done_at IS NULL"
)
# tell a human: a triage message and a page, queued (durably) with the failed row's end
_ESCALATE = (
    "INSERT INTO runbook.outbox (incident_id, action, target)"
    " VALUES (%(id)s, 'slack', %(why)s), (%(id)s, 'page', %(why)s)"
    " ON CONFLICT (incident_id, action) DO UPDATE SET target = EXCLUDED.target,"
    " created_at = now(), attempts = 0, next_attempt_at = now(), done_at = NULL, result = NULL,"
    " last_error = NULL"
)
_RETRY = (
    "UPDATE runbook.outbox SET attempts = attempts + 1, last_error = %s,"
    " next_attempt_at = now() + make_interval(secs => %s)"
    " WHERE incident_id = %s AND action = %s AND done_at IS NULL"
)
# depth, and age in seconds of the oldest row not done (0 when none)
OUTBOX_STATS = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8"
    " FROM runbook.outbox WHERE done_at IS NULL"
)


class DeploymentMissing(DispatchFailed):
    """Prefect has no such deployment: permanent, retrying will not create it."""

    def __init__(self, deployment: str) -> None:
        super().__init__(f"no deployment {deployment}")
        self.deployment = deployment


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
        """Claim one due row and attempt it; False when none is due (or all are claimed)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DUE, (2 * self.settings.intake_dispatch_concurrency,))
            for row in await cur.fetchall():
                key = f"{row[0]}:{row[1]}"
                locked = await (await conn.execute(_LOCK, (_LOCK_SPACE, key))).fetchone()
                if not locked or not locked[0]:
                    continue  # another worker or process has it
                try:
                    due = await (await conn.execute(_STILL_DUE, (row[0], row[1]))).fetchone()
                    if due is None:
                        continue  # finished or rescheduled meanwhile
                    await self._attempt(conn, Job(str(row[0]), str(row[1]), str(row[2]), due[0]))
                    return True
                finally:
                    await conn.execute(_UNLOCK, (_LOCK_SPACE, key))
        return False

    async def _attempt(self, conn: Conn, job: Job) -> None:
        try:
            async with asyncio.timeout(self.settings.intake_dispatch_timeout_s):
                result = await self._perform(job)
        except DeploymentMissing as exc:
            await self._escalate(conn, job, str(exc))
        except Exception as exc:
            delay = self.backoff(job.attempts)
            asked = exc.retry_after if isinstance(exc, DispatchFailed) else None
            if asked:  # a 429's Retry-After: never sooner (bounded: a page must still go out)
                delay = max(delay, min(asked, RETRY_AFTER_MAX_S))
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
            await conn.execute(_RETRY, (message, delay, job.incident_id, job.action))
        else:
            self.metrics.dispatched.labels(job.action).inc()
            log.info("dispatched %s for incident %s: %s", job.action, job.incident_id, result)
            await conn.execute(_DONE, (result, job.incident_id, job.action))

    async def _escalate(self, conn: Conn, job: Job, reason: str) -> None:
        """Finish the row for good and queue the Slack triage message and the page with it."""
        self.metrics.dispatch_failures.labels(job.action).inc()
        log.error(
            "dispatch %s for incident %s failed for good (%s): triage to Slack, paging",
            job.action,
            job.incident_id,
            reason,
        )
        async with conn.transaction():
            await conn.execute(_FAILED, (f"failed: {reason}", reason, job.incident_id, job.action))
            await conn.execute(_ESCALATE, {"id": job.incident_id, "why": reason})

    async def _perform(self, job: Job) -> str:
        if job.action == "flow":
            return await create_flow_run(job.target, job.incident_id)
        if job.action in ("slack", "page"):
            async with self.pool.connection() as conn:
                incident = await get_incident(conn, job.incident_id)
            if incident is None:
                return "skipped: incident not found"
            if job.action == "slack":
                return await notify_slack(incident, job.target)
            return await page(incident, job.target)
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
    except ObjectNotFound:
        raise DeploymentMissing(deployment) from None
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            raise DeploymentMissing(deployment) from None
        raise DispatchFailed(f"Prefect API answered {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise DispatchFailed(f"Prefect API unreachable: {type(exc).__name__}") from None
    return str(flow_run.id)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]
