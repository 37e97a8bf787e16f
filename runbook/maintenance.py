"""Maintenance windows (runbook "Maintenance Windows"): the window arithmetic and all their SQL.

A row of `runbook.maintenance_windows` is what the intake suppresses alerts with
(`runbook.intake_record`: a firing alert while a window is active is recorded `suppressed`, and
dispatched if it is still firing after the window). Only the maintenance flows write it, through
`open_window` / `close_window`: a window opens when maintenance mode is switched on and closes
(its `ends_at` moved back to that moment) as soon as service is restored. One window at a time:
`open_window` refuses while another run's window is active.

`runbook.maintenance_notices` holds the 48-hour notice of one scheduled window: the customer
status page entry, the plan of updates announced, and the approval given for them at notice time
— one approval scope per step (`runbook.approval.scope`: action, target, exact parameters), so a
step that changed since the notice asks again.

The window arithmetic is pure: the Policy says when a window ends (`maintenance_window_end_utc`,
"04:00") and how long it is (`maintenance_window_minutes`, 120); the schedule in `prefect.yaml`
says on which day it runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

Conn = psycopg.AsyncConnection[Any]
_LOCK = "runbook.maintenance_windows"


# -- the window arithmetic (pure) ---------------------------------------------------------------
class Window(BaseModel):
    """One maintenance window, in UTC."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """`20300602-0200`: names the window's incident and its artifacts."""
        return f"{self.start.astimezone(UTC):%Y%m%d-%H%M}"

    def text(self) -> str:
        return (
            f"{self.start.astimezone(UTC):%a %Y-%m-%d %H:%M}-{self.end.astimezone(UTC):%H:%M} UTC"
        )

    def left_s(self, moment: datetime) -> float:
        return (self.end - moment).total_seconds()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def end_after(moment: datetime, end_hhmm: str) -> datetime:
    """The first `end_hhmm` (UTC) strictly after `moment`."""
    moment = _utc(moment)
    hours, minutes = (int(x) for x in end_hhmm.split(":"))
    end = datetime.combine(moment.date(), time(hours, minutes), tzinfo=UTC)
    return end if end > moment else end + timedelta(days=1)


def window_of(moment: datetime, end_hhmm: str, minutes: int) -> Window | None:
    """The window `moment` falls in (start ≤ moment < end), or None outside every window."""
    end = end_after(moment, end_hhmm)
    start = end - timedelta(minutes=minutes)
    return Window(start=start, end=end) if start <= _utc(moment) else None


def next_window(moment: datetime, end_hhmm: str, minutes: int) -> Window:
    """The window `moment` falls in, else the next one to start (what a notice announces)."""
    end = end_after(moment, end_hhmm)
    return Window(start=end - timedelta(minutes=minutes), end=end)


# -- window rows (what the intake suppresses with) ----------------------------------------------
class WindowRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    starts_at: datetime
    ends_at: datetime
    reason: str
    kind: str
    flow_run_id: str | None
    incident_id: str | None
    closed_at: datetime | None


_ROW = "id, starts_at, ends_at, reason, kind, flow_run_id, incident_id, closed_at"


async def _one(conn: Conn, query: str, params: tuple[Any, ...]) -> WindowRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]  # constant SQL only
        row = await cur.fetchone()
    return WindowRow.model_validate(row) if row else None


async def open_window(
    conn: Conn,
    *,
    seconds: float,
    reason: str,
    kind: str,
    flow_run_id: str,
    incident_id: str,
) -> tuple[WindowRow | None, WindowRow | None]:
    """Open a window from now for `seconds` (the intake suppresses alerts from now on).

    Returns (the window, None), or (None, the other run's active window) when another run holds
    one. The same run opening again (a rerun after an approval) gets its own open window back."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        active = f"SELECT {_ROW} FROM runbook.maintenance_windows WHERE closed_at IS NULL"
        active += " AND starts_at <= now() AND ends_at > now()"
        mine = await _one(conn, active + " AND flow_run_id = %s", (flow_run_id,))
        if mine is not None:
            return mine, None
        other = await _one(conn, active + " ORDER BY ends_at DESC LIMIT 1", ())
        if other is not None:
            return None, other
        created = await _one(
            conn,
            "INSERT INTO runbook.maintenance_windows (starts_at, ends_at, reason, kind,"
            " flow_run_id, incident_id) VALUES (clock_timestamp(),"
            " clock_timestamp() + make_interval(secs => %s), %s, %s, %s, %s)"
            f" RETURNING {_ROW}",
            (max(1.0, seconds), reason, kind, flow_run_id, incident_id),
        )
    return created, None


async def close_window(conn: Conn, window_id: int) -> WindowRow | None:
    """End the window now (alerts are no longer suppressed); closing twice changes nothing."""
    return await _one(
        conn,
        "UPDATE runbook.maintenance_windows SET closed_at = clock_timestamp(),"
        " ends_at = greatest(least(ends_at, clock_timestamp()),"
        " starts_at + interval '1 millisecond')"
        f" WHERE id = %s AND closed_at IS NULL RETURNING {_ROW}",
        (window_id,),
    )


async def current_window(conn: Conn) -> WindowRow | None:
    """The window active now (alerts are being suppressed), if any."""
    return await _one(
        conn,
        f"SELECT {_ROW} FROM runbook.maintenance_windows WHERE starts_at <= now()"
        " AND ends_at > now() ORDER BY ends_at DESC LIMIT 1",
        (),
    )


async def window_by_id(conn: Conn, window_id: int) -> WindowRow | None:
    return await _one(
        conn, f"SELECT {_ROW} FROM runbook.maintenance_windows WHERE id = %s", (window_id,)
    )


# -- notices ------------------------------------------------------------------------------------
class Notice(BaseModel):
    """The notice of one scheduled window and the approval given for its steps then."""

    model_config = ConfigDict(frozen=True)

    window_start: datetime
    window_end: datetime
    noticed_at: datetime
    flow_run_id: str | None
    status_incident: str | None
    plan: list[dict[str, Any]]
    notified_at: datetime | None
    approved_scopes: list[str]
    approved_by: list[str]
    approved_at: datetime | None


_NOTICE = (
    "window_start, window_end, noticed_at, flow_run_id, status_incident, plan, notified_at,"
    " approved_scopes, approved_by, approved_at"
)


async def _notice(conn: Conn, query: str, params: tuple[Any, ...]) -> Notice | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]  # constant SQL only
        row = await cur.fetchone()
    return Notice.model_validate(row) if row else None


async def save_notice(
    conn: Conn, window: Window, plan: list[dict[str, Any]], flow_run_id: str
) -> Notice:
    """Record (or refresh) the notice of `window` with the plan it announces."""
    found = await _notice(
        conn,
        "INSERT INTO runbook.maintenance_notices (window_start, window_end, plan, flow_run_id)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (window_start) DO UPDATE SET"
        " window_end = EXCLUDED.window_end, plan = EXCLUDED.plan,"
        " flow_run_id = EXCLUDED.flow_run_id,"
        # a notice asked again asks its approval again: an older answer approved another plan
        " approved_scopes = '{}', approved_by = '{}', approved_at = NULL"
        f" RETURNING {_NOTICE}",
        (window.start, window.end, Jsonb(plan), flow_run_id),
    )
    assert found is not None
    return found


async def get_notice(conn: Conn, window_start: datetime) -> Notice | None:
    return await _notice(
        conn,
        f"SELECT {_NOTICE} FROM runbook.maintenance_notices WHERE window_start = %s",
        (window_start,),
    )


async def next_notice(conn: Conn, after: datetime) -> Notice | None:
    """The first noticed window that has not ended by `after`."""
    return await _notice(
        conn,
        f"SELECT {_NOTICE} FROM runbook.maintenance_notices WHERE window_end > %s"
        " ORDER BY window_start LIMIT 1",
        (after,),
    )


async def set_status_incident(conn: Conn, window_start: datetime, incident_id: str) -> None:
    await conn.execute(
        "UPDATE runbook.maintenance_notices SET status_incident = %s WHERE window_start = %s",
        (incident_id, window_start),
    )


async def mark_notified(conn: Conn, window_start: datetime) -> bool:
    """True the first time only: Slack and email are told once per window."""
    cur = await conn.execute(
        "UPDATE runbook.maintenance_notices SET notified_at = now()"
        " WHERE window_start = %s AND notified_at IS NULL",
        (window_start,),
    )
    return cur.rowcount == 1


async def record_approval(
    conn: Conn, window_start: datetime, scopes: list[str], approvers: list[str]
) -> None:
    """The steps approved at notice time (their scopes) and by whom."""
    await conn.execute(
        "UPDATE runbook.maintenance_notices SET approved_scopes = %s, approved_by = %s,"
        " approved_at = now() WHERE window_start = %s",
        (scopes, approvers, window_start),
    )


async def consume_approval(conn: Conn, window_start: datetime, step_scope: str) -> bool:
    """Use the notice-time approval of `step_scope` once: True for the first caller only (a
    second run in the same window, or a replay, asks a human again)."""
    cur = await conn.execute(
        "UPDATE runbook.maintenance_notices SET consumed_scopes = consumed_scopes || %s::text"
        " WHERE window_start = %s AND %s = ANY(approved_scopes)"
        " AND NOT (%s = ANY(consumed_scopes)) RETURNING 1",
        (step_scope, window_start, step_scope, step_scope),
    )
    return await cur.fetchone() is not None
