"""The approvals store: every approval wait and its answer — all approval SQL lives here.

A row is one approval point of one flow run: (flow run, pause key). `mode` says how the run
waits (`pause`: the approval-gate subflow keeps its process; `suspend`: the run exited and is
rerun after the answer). `runbook approvals` lists the waiting ones; the sweeper answers
"timed out" for expired suspended ones.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from runbook.actions import ActionRequest

Conn = psycopg.AsyncConnection[Any]


class ApprovalStatus(StrEnum):
    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    WITHDRAWN = "withdrawn"  # the rerun re-checked and finished without needing it


class WaitMode(StrEnum):
    PAUSE = "pause"
    SUSPEND = "suspend"


class Answer(BaseModel):
    """What is stored for one approval point."""

    status: ApprovalStatus
    approver: str | None
    reason: str | None
    expires_at: datetime


class Waiting(BaseModel):
    flow_run_id: str
    pause_key: str
    incident_id: str
    action: str
    target: str
    summary: str
    ui_url: str | None
    requested_at: datetime
    expires_at: datetime


async def record(
    conn: Conn,
    *,
    run_id: str,
    pause_key: str,
    mode: WaitMode,
    request: ActionRequest,
    summary: str,
    link: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO runbook.approvals (flow_run_id, pause_key, mode, idempotency_key,"
        " incident_id, action, target, summary, ui_url, status, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (flow_run_id, pause_key) DO UPDATE SET status = EXCLUDED.status,"
        " expires_at = EXCLUDED.expires_at, decided_at = NULL",
        (
            run_id,
            pause_key,
            mode.value,
            request.idempotency_key,
            request.incident_id,
            request.action,
            request.target,
            summary,
            link,
            ApprovalStatus.WAITING.value,
            expires_at,
        ),
    )


async def decide(
    conn: Conn,
    run_id: str,
    pause_key: str,
    status: ApprovalStatus,
    approver: str | None,
    reason: str,
) -> None:
    await conn.execute(
        "UPDATE runbook.approvals SET status = %s, approver = %s, reason = %s,"
        " decided_at = now() WHERE flow_run_id = %s AND pause_key = %s",
        (status.value, approver, reason, run_id, pause_key),
    )


async def load(conn: Conn, run_id: str, pause_key: str) -> Answer | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT status, approver, reason, expires_at FROM runbook.approvals"
            " WHERE flow_run_id = %s AND pause_key = %s",
            (run_id, pause_key),
        )
        row = await cur.fetchone()
    return Answer.model_validate(row) if row else None


async def has_waited(conn: Conn, run_id: str) -> bool:
    """Did this flow run ever wait for an approval (a rerun after its answer)?"""
    cur = await conn.execute(
        "SELECT 1 FROM runbook.approvals WHERE flow_run_id = %s LIMIT 1", (run_id,)
    )
    return await cur.fetchone() is not None


async def withdraw_waiting(conn: Conn, run_id: str) -> None:
    """A run that finished without needing its open approvals closes them."""
    await conn.execute(
        "UPDATE runbook.approvals SET status = %s, decided_at = now(),"
        " reason = 'the flow finished without needing it' WHERE flow_run_id = %s"
        " AND status = %s",
        (ApprovalStatus.WITHDRAWN.value, run_id, ApprovalStatus.WAITING.value),
    )


async def time_out_paused(conn: Conn, idempotency_key: str, why: str) -> None:
    """The approval-gate subflow ended without an answer (Prefect's pause timeout)."""
    await conn.execute(
        "UPDATE runbook.approvals SET status = %s, reason = %s, decided_at = now()"
        " WHERE idempotency_key = %s AND status = %s AND mode = %s",
        (
            ApprovalStatus.TIMED_OUT.value,
            why,
            idempotency_key,
            ApprovalStatus.WAITING.value,
            WaitMode.PAUSE.value,
        ),
    )


async def expired_suspended(conn: Conn, limit: int = 100) -> list[tuple[str, str, str, str]]:
    """(run, pause key, action, target) of suspended waits past their expiry, not swept in the
    last 30 s."""
    cur = await conn.execute(
        "SELECT flow_run_id, pause_key, action, target FROM runbook.approvals"
        " WHERE mode = %s AND status = %s AND expires_at < now()"
        " AND (swept_at IS NULL OR swept_at < now() - interval '30 seconds')"
        " ORDER BY expires_at LIMIT %s",
        (WaitMode.SUSPEND.value, ApprovalStatus.WAITING.value, limit),
    )
    return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in await cur.fetchall()]


async def mark_swept(conn: Conn, run_id: str, pause_key: str) -> None:
    await conn.execute(
        "UPDATE runbook.approvals SET swept_at = now() WHERE flow_run_id = %s AND pause_key = %s",
        (run_id, pause_key),
    )


async def end_unanswered(conn: Conn, run_id: str, pause_key: str, why: str) -> str | None:
    """A run that ended while waiting: its approval timed out. Returns the incident, or None
    when the row was already decided."""
    cur = await conn.execute(
        "UPDATE runbook.approvals SET status = %s, reason = %s, decided_at = now()"
        " WHERE flow_run_id = %s AND pause_key = %s AND status = %s RETURNING incident_id",
        (ApprovalStatus.TIMED_OUT.value, why, run_id, pause_key, ApprovalStatus.WAITING.value),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def waiting(conn: Conn) -> list[Waiting]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT flow_run_id, pause_key, incident_id, action, target, summary, ui_url,"
            " requested_at, expires_at FROM runbook.approvals WHERE status = %s"
            " ORDER BY requested_at",
            (ApprovalStatus.WAITING.value,),
        )
        rows = await cur.fetchall()
    return [Waiting.model_validate(r) for r in rows]


async def count_waiting(conn: Conn) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM runbook.approvals WHERE status = %s", (ApprovalStatus.WAITING.value,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
