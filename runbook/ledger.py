"""The action ledger: every intent, approval, outcome and verification, keyed for exactly-once.

Protocol for one act (see `runbook/safety.py`):
1. `lock(key)` — a session advisory lock on the key: one process at a time per act. It dies with
   the connection, so a crashed worker never leaves it held.
2. `get(key)` — `done` → never again; `started` → the outcome is unknown (crash between call and
   record): reconcile against the platform before acting again.
3. `mark(key, "started")` before the call, `mark(key, "done", outcome)` after it.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from runbook.actions import ActionClass, ActionRequest
from runbook.errors import PermanentError

Conn = psycopg.AsyncConnection[Any]


class LedgerStatus(StrEnum):
    """Where one act stands (a CHECK constraint in the database holds the same list)."""

    INTENT = "intent"  # wanted, nothing decided yet
    PLANNED = "planned"  # dry run: what would have been done
    APPROVED = "approved"  # a human approved this exact scope (approved_scope, approved_at)
    STARTED = "started"  # sent; the outcome is unknown until `done` (reconcile after a crash)
    DONE = "done"  # happened (final)
    UNDONE = "undone"  # happened and was reverted after a failed verify (final)
    FAILED = "failed"  # the platform refused it (permanent error)
    REJECTED = "rejected"  # not approved (no, timeout, refused answer, impossible)
    REFUSED = "refused"  # a rule stopped it (budget, slot, another scope started)
    SKIPPED = "skipped"  # the symptom was gone when re-checked after approval
    HELD = "held"  # the kill switch was on


class LedgerEntry(BaseModel):
    idempotency_key: str
    incident_id: str
    action: str
    target: str
    action_class: str
    params: dict[str, Any]
    status: str
    dry_run: bool
    flow_run_id: str | None
    approvers: list[str]
    outcome: dict[str, Any] | None
    verified: bool | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    approved_scope: str | None = None
    approved_at: datetime | None = None


class TimelineEvent(BaseModel):
    at: datetime
    kind: str
    summary: str
    idempotency_key: str | None
    detail: dict[str, Any]


async def lock(conn: Conn, key: str) -> None:
    """Hold the act's advisory lock on this (dedicated) connection until `unlock` or close."""
    await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))


async def unlock(conn: Conn, key: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


async def get(conn: Conn, key: str) -> LedgerEntry | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM runbook.actions WHERE idempotency_key = %s", (key,))
        row = await cur.fetchone()
    return LedgerEntry.model_validate(row) if row else None


async def ensure(
    conn: Conn,
    request: ActionRequest,
    cls: ActionClass,
    *,
    status: str,
    dry_run: bool,
    flow_run_id: str | None,
) -> LedgerEntry:
    """Insert the intent if it is new; return the entry as it stands (new or existing)."""
    await conn.execute(
        "INSERT INTO runbook.actions (idempotency_key, incident_id, action, target,"
        " action_class, params, status, dry_run, flow_run_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING",
        (
            request.idempotency_key,
            request.incident_id,
            request.action,
            request.target,
            cls.value,
            json.dumps(request.params),
            status,
            dry_run,
            flow_run_id,
        ),
    )
    entry = await get(conn, request.idempotency_key)
    if entry is None:  # a precondition of every act: fail it, never assert
        raise PermanentError(f"ledger: entry {request.idempotency_key} missing after insert")
    return entry


async def mark(
    conn: Conn,
    key: str,
    status: str,
    *,
    outcome: dict[str, Any] | None = None,
    approvers: list[str] | None = None,
    verified: bool | None = None,
    count_attempt: bool = False,
    approved_scope: str | None = None,
) -> None:
    """Set the entry's status. An approval records what it approved (`approved_scope`) and
    when; any other status clears both, so an approval is never reused after the entry moved on."""
    # a "did not act" verdict (rejected, refused, skipped, approved, held) from one run must never
    # overwrite what another run of the same incident already did or is doing
    guard = (
        " AND status NOT IN ('done', 'undone', 'started')"
        if status in {"rejected", "refused", "skipped", "approved", "held"}
        else ""
    )
    if status == "approved":
        scope_sql = ", approved_scope = %s, approved_at = now()"
        scope_args: tuple[Any, ...] = (approved_scope,)
    elif status in {"started", "done", "undone"}:
        scope_sql, scope_args = "", ()  # the act keeps the approval it ran under
    else:
        scope_sql, scope_args = ", approved_scope = NULL, approved_at = NULL", ()
    await conn.execute(
        "UPDATE runbook.actions SET status = %s, updated_at = now(),"
        " outcome = COALESCE(%s, outcome), approvers = COALESCE(%s, approvers),"
        " verified = COALESCE(%s, verified), attempts = attempts + %s"
        + scope_sql
        + " WHERE idempotency_key = %s"
        + guard,
        (
            status,
            json.dumps(outcome) if outcome is not None else None,
            approvers,
            verified,
            1 if count_attempt else 0,
            *scope_args,
            key,
        ),
    )


async def mutations_done_last_hour(conn: Conn, target: str) -> int:
    """How many mutating acts (safe or destructive) ran on `target` in the last hour."""
    cur = await conn.execute(
        "SELECT count(*) FROM runbook.actions WHERE target = %s AND action_class <> 'read'"
        " AND status IN ('done', 'started', 'undone') AND NOT dry_run"
        " AND updated_at > now() - interval '1 hour'",
        (target,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def destructive_done_last_hour(conn: Conn, target: str) -> int:
    """How many destructive acts ran on `target` in the last hour (the blast-radius budget)."""
    cur = await conn.execute(
        "SELECT count(*) FROM runbook.actions WHERE target = %s AND action_class = 'destructive'"
        " AND status IN ('done', 'started', 'undone') AND NOT dry_run"
        " AND updated_at > now() - interval '1 hour'",
        (target,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def last_done(conn: Conn, action: str, target: str) -> LedgerEntry | None:
    """The most recent real (not dry-run) `action` on `target` that is done."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM runbook.actions WHERE action = %s AND target = %s AND status = 'done'"
            " AND NOT dry_run ORDER BY updated_at DESC LIMIT 1",
            (action, target),
        )
        row = await cur.fetchone()
    return LedgerEntry.model_validate(row) if row else None


async def event(
    conn: Conn,
    incident_id: str,
    kind: str,
    summary: str,
    *,
    key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one line to the incident's timeline."""
    await conn.execute(
        "INSERT INTO runbook.action_events (incident_id, idempotency_key, kind, summary, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (incident_id, key, kind, summary, json.dumps(detail or {}, default=str)),
    )


async def timeline(conn: Conn, incident_id: str) -> list[TimelineEvent]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT at, kind, summary, idempotency_key, detail FROM runbook.action_events"
            " WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        )
        rows = await cur.fetchall()
    return [TimelineEvent.model_validate(r) for r in rows]


async def entries(conn: Conn, incident_id: str) -> list[LedgerEntry]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM runbook.actions WHERE incident_id = %s ORDER BY created_at",
            (incident_id,),
        )
        rows = await cur.fetchall()
    return [LedgerEntry.model_validate(r) for r in rows]


# -- lost runs (a process killed mid-run: see flows/approval_sweeper.py) -------------------------
# A live incident run holds a session advisory lock on `run-lease:<flow run id>` for as long as it
# runs (flows/incident.py). It dies with the process's connection, so a run that Prefect still
# shows Running but whose lease is free has lost its process (SIGKILL, OOM, a machine gone).
RUN_LEASE = "run-lease:"


def run_lease_sql(run_id: str) -> tuple[str, tuple[str]]:
    """The statement (and its argument) that takes a run's lease on a dedicated connection."""
    return "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (RUN_LEASE + run_id,)


async def run_alive(conn: Conn, run_id: str) -> bool:
    """Does some process hold this run's lease (is the run's process alive)?"""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (RUN_LEASE + run_id,)
    )
    row = await cur.fetchone()
    if row and row[0]:  # free: nobody holds it; give it back at once
        await conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (RUN_LEASE + run_id,)
        )
        return False
    return True


async def unfinished_runs(
    conn: Conn, skip: list[str] | None = None, limit: int = 100
) -> list[tuple[str, str]]:
    """(flow run, incident), newest first, of real acts of the last day whose run never finished
    the incident: the entry is still in flight (intent, approved, started) or done with no
    `finished` line on the timeline after it, and no lost-run escalation was recorded for that
    run yet. `skip`: runs the caller has already settled."""
    cur = await conn.execute(
        "SELECT a.flow_run_id, a.incident_id FROM runbook.actions a"
        " WHERE NOT a.dry_run AND a.flow_run_id IS NOT NULL"
        " AND NOT (a.flow_run_id = ANY(%s))"
        " AND a.status IN ('intent', 'approved', 'started', 'done')"
        " AND a.updated_at > now() - interval '1 day'"
        " AND NOT EXISTS (SELECT 1 FROM runbook.action_events e"
        "  WHERE e.incident_id = a.incident_id AND ("
        "   (e.at >= a.updated_at AND (e.kind = 'finished' OR e.kind LIKE '%% finished'))"
        "   OR e.detail->>'lost_run' = a.flow_run_id))"
        " GROUP BY a.flow_run_id, a.incident_id ORDER BY max(a.updated_at) DESC LIMIT %s",
        (list(skip or []), limit),
    )
    return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]


async def of_run(conn: Conn, run_id: str) -> list[LedgerEntry]:
    """The real (not dry-run) entries a flow run created."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM runbook.actions WHERE flow_run_id = %s AND NOT dry_run"
            " ORDER BY created_at",
            (run_id,),
        )
        rows = await cur.fetchall()
    return [LedgerEntry.model_validate(r) for r in rows]
