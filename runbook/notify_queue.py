"""The notification outbox: every Slack message and PagerDuty page, durable before it is sent.

A sender writes the row, tries at once, and marks it `sent` — or leaves it `pending` with a
backoff; `runbook serve` / `runbook sweep` retry due rows (bounded attempts), claiming each with
a short lease so two senders never send the same row at the same moment. Channels are names,
never webhook URLs; one-time approval codes never enter this table.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

Conn = psycopg.AsyncConnection[Any]
MAX_ATTEMPTS = 6
LEASE_S = 60


class Notice(BaseModel):
    id: int
    channel: str
    dedup_key: str | None
    body: str
    details: dict[str, Any]
    attempts: int


async def enqueue(
    conn: Conn,
    channel: str,
    body: str,
    details: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> Notice:
    """Write the notice, claimed by the caller for its first attempt (lease)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO runbook.notifications (channel, dedup_key, body, details,"
            " next_attempt_at) VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))"
            " RETURNING id, channel, dedup_key, body, details, attempts",
            (channel, dedup_key, body, json.dumps(details or {}, default=str), LEASE_S),
        )
        row = await cur.fetchone()
    if row is None:
        raise RuntimeError("notification outbox: INSERT … RETURNING gave no row")
    return Notice.model_validate(row)


async def sent(conn: Conn, notice_id: int) -> None:
    await conn.execute(
        "UPDATE runbook.notifications SET status = 'sent', sent_at = now(),"
        " attempts = attempts + 1, last_error = NULL WHERE id = %s",
        (notice_id,),
    )


async def failed_attempt(conn: Conn, notice_id: int, error: str) -> bool:
    """Record a failed attempt; True when the notice has no attempts left (now `failed`)."""
    cur = await conn.execute(
        "UPDATE runbook.notifications SET attempts = attempts + 1, last_error = %s,"
        " status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END,"
        " next_attempt_at = now() + make_interval(secs => least(300, 5 * power(2, attempts)))"
        " WHERE id = %s RETURNING status",
        (error[:300], MAX_ATTEMPTS, notice_id),
    )
    row = await cur.fetchone()
    return bool(row and row[0] == "failed")


async def claim_due(conn: Conn, limit: int = 50) -> list[Notice]:
    """Due pending notices, each leased to this caller for `LEASE_S`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE runbook.notifications SET next_attempt_at = now() + make_interval(secs => %s)"
            " WHERE id IN (SELECT id FROM runbook.notifications WHERE status = 'pending'"
            " AND next_attempt_at <= now() ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, channel, dedup_key, body, details, attempts",
            (LEASE_S, limit),
        )
        rows = await cur.fetchall()
    return [Notice.model_validate(r) for r in rows]


async def pending_count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM runbook.notifications WHERE status = 'pending'")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
