"""The kill switch: `runbook pause [--target T] --reason R` stops every act at once.

Stored in the ops database and read by every act right before it runs (no redeploy, no restart).
While a pause covers a target, acts on it are recorded as `held`, and the incident pages.
`runbook resume [--target T]` lifts it. Target `*` (the default) covers everything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

Conn = psycopg.AsyncConnection[Any]
ALL = "*"


class Pause(BaseModel):
    target: str
    reason: str
    paused_by: str
    paused_at: datetime


async def pause(conn: Conn, reason: str, paused_by: str, target: str = ALL) -> None:
    await conn.execute(
        "INSERT INTO runbook.pauses (target, reason, paused_by) VALUES (%s, %s, %s)"
        " ON CONFLICT (target) DO UPDATE SET reason = EXCLUDED.reason,"
        " paused_by = EXCLUDED.paused_by, paused_at = now()",
        (target, reason, paused_by),
    )


async def resume(conn: Conn, target: str | None = None) -> int:
    """Lift the pause of `target` (None: every pause); returns how many were lifted."""
    if target is None:
        cur = await conn.execute("DELETE FROM runbook.pauses")
    else:
        cur = await conn.execute("DELETE FROM runbook.pauses WHERE target = %s", (target,))
    return cur.rowcount


async def active(conn: Conn, target: str) -> Pause | None:
    """The pause that holds acts on `target` now (its own, else the global one)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM runbook.pauses WHERE target IN (%s, %s)"
            " ORDER BY target = %s DESC LIMIT 1",
            (target, ALL, target),
        )
        row = await cur.fetchone()
    return Pause.model_validate(row) if row else None


async def all_pauses(conn: Conn) -> list[Pause]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM runbook.pauses ORDER BY paused_at")
        rows = await cur.fetchall()
    return [Pause.model_validate(r) for r in rows]
