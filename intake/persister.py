"""Group commit: deliveries that arrive while a commit is in flight are persisted together.

Each request hands its alerts to the `Persister` and waits; a few writer tasks take whatever is
queued (up to `max_batch` deliveries), record it with one statement (`record_alerts`: one round
trip, one transaction, one commit) and wake the requests. A request is answered only after the
commit that holds its alerts, so persist-before-ack holds exactly as with one commit per request;
under a storm the commits (and their WAL flushes) are shared. At low load a batch is one delivery
and nothing waits.

A batch that fails on its content (a value Postgres refuses, a deadlock with another intake copy)
is split in halves and each half retried, down to single deliveries: the good deliveries of the
batch are committed (one bad delivery among 64 costs ~12 statements, not 64), and only a
delivery that fails alone gets the error. A delivery Postgres refuses for what it contains
(`REFUSED`: a DataError such as a value too long for a column, a number out of range, an
invalid byte sequence, or a value over a database limit) is answered 400 naming the problem
(`refusal()`). A database that is unreachable fails every waiting request (→ 503, the senders
retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import psycopg
from psycopg_pool import AsyncConnectionPool

from runbook.alerts import Alert
from runbook.incidents import Placement, Recorded, record_alerts

log = logging.getLogger("intake.persister")

Unit = list[tuple[Alert, Placement]]
_Pending = tuple[Unit, "asyncio.Future[list[Recorded]]"]

# what one delivery carried, refused by the database: that delivery gets a 400, never a retry
REFUSED = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)

# errors caused by what was in the batch rather than by the database being unavailable
_CONTENT_ERRORS = (
    *REFUSED,
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
                log.info("batch of %d refused (%s); split", len(batch), type(exc).__name__)
                half = len(batch) // 2
                await self._flush(batch[:half])
                await self._flush(batch[half:])
                return
            if isinstance(exc, REFUSED):
                log.info("delivery refused by the database: %s", exc.sqlstate)
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


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def refusal(exc: psycopg.Error) -> str:
    """What the database refused, as one line for the sender: Postgres's own primary message
    (e.g. "value too long for type character varying(64)"), with quoted values and URLs cut
    out so no input, secret or address is echoed, and the SQLSTATE."""
    primary = (exc.diag.message_primary or type(exc).__name__).splitlines()[0]
    primary = _URL.sub("…", _QUOTED.sub('"…"', primary))[:200]
    return f"{primary} (SQLSTATE {exc.sqlstate or '?'})"
