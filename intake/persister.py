"""Group commit: deliveries that arrive while a commit is in flight are persisted together.

Each request hands its alerts to the `Persister` and waits; a few writer tasks take whatever is
queued (up to `max_batch` deliveries), record it with one statement (`record_alerts`: one round
trip, one transaction, one commit) and wake the requests. A request is answered only after the
commit that holds its alerts, so persist-before-ack holds exactly as with one commit per request;
under a storm the commits (and their WAL flushes) are shared. At low load a batch is one delivery
and nothing waits.

A batch that fails on its content (a value Postgres refuses, a deadlock with another intake copy)
is retried one delivery at a time, so one bad delivery cannot fail the others. A database that is
unreachable fails every waiting request (→ 503, the senders retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from runbook.alerts import Alert
from runbook.incidents import Placement, Recorded, record_alerts

log = logging.getLogger("intake.persister")

Unit = list[tuple[Alert, Placement]]
_Pending = tuple[Unit, "asyncio.Future[list[Recorded]]"]

# errors caused by what was in the batch rather than by the database being unavailable
_CONTENT_ERRORS = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.RaiseException,
)


class Persister:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        cooldown_s: float,
        writers: int = 2,
        max_batch: int = 64,
        timeout_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.cooldown_s = cooldown_s
        self.writers = writers
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._writer(), name=f"intake-persist-{i}")
            for i in range(self.writers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():  # nobody will write these: let the senders retry
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(psycopg.OperationalError("intake is shutting down"))

    async def record(self, unit: Unit) -> list[Recorded]:
        """Persist one delivery's alerts (atomically); returns once they are committed."""
        future: asyncio.Future[list[Recorded]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((unit, future))
        return await future

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._flush(batch)
            except Exception as exc:  # a bug must not stop the writer: fail this batch only
                log.error("persisting a batch failed: %s", type(exc).__name__)
                _fail(batch, exc)

    async def _flush(self, batch: list[_Pending]) -> None:
        items = [item for unit, _ in batch for item in unit]
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                results = await record_alerts(conn, items, cooldown_s=self.cooldown_s)
        except _CONTENT_ERRORS as exc:
            if len(batch) > 1:
                log.info("batch of %d refused (%s); one by one", len(batch), type(exc).__name__)
                for pending in batch:
                    await self._flush([pending])
                return
            _fail(batch, exc)
            return
        except Exception as exc:  # unreachable database, pool timeout: every sender retries
            _fail(batch, exc)
            return
        start = 0
        for unit, future in batch:
            if not future.done():  # the request may have been cancelled (client went away)
                future.set_result(results[start : start + len(unit)])
            start += len(unit)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
