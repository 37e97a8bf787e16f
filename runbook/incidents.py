"""Incidents: one per problem, however many alerts report it.

An incident is keyed by (route, target, group): the runbook flow that handles it, the thing that
is broken (`api`, `postgres`, …) and a grouping label (the environment, by default). While an
incident is open every further firing alert for its key is attached to it and counted; a resolved
alert closes it; a firing alert within the cool-down after that reopens it (a flap, no second
run); after the cool-down a new incident opens. During a maintenance window that explains it, an
incident is `suppressed`: recorded, counted, nothing dispatched.

The decision runs in Postgres (`runbook.intake_record`, migration 100) in one transaction, so any
number of intake processes agree. The incident flows read the alert context with
`get_incident(conn, incident_id)`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from runbook.alerts import Alert, Severity

Conn = psycopg.AsyncConnection[Any]


class IncidentStatus(StrEnum):
    OPEN = "open"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"


class Outcome(StrEnum):
    """What recording one alert did."""

    NEW = "new"  # opened an incident (its dispatch is queued)
    COALESCED = "coalesced"  # attached to the open incident for its key
    REOPENED = "reopened"  # a firing alert within the cool-down reopened a resolved incident
    SUPPRESSED = "suppressed"  # explained by an active maintenance window
    RESOLVED = "resolved"  # closed the incident (or found it already closed)
    DUPLICATE = "duplicate"  # the same delivery again (same source delivery id)


class Incident(BaseModel):
    """One problem, with the context of the alerts that reported it."""

    model_config = ConfigDict(frozen=True)

    id: str
    route: str = Field(description="routing-table entry, e.g. high-error-rate or triage")
    flow: str | None = Field(description="the Prefect flow that remediates it, if any")
    target: str = Field(description="what is broken: api, postgres, llm, …")
    group_key: str
    status: IncidentStatus
    severity: Severity
    title: str = Field(description="the first alert's name")
    summary: str
    labels: dict[str, str]
    annotations: dict[str, str]
    sources: tuple[str, ...]
    alert_count: int = Field(description="firing alerts attached, the first one included")
    duplicate_count: int = Field(description="exact redeliveries (same delivery id)")
    resolved_count: int
    reopen_count: int
    maintenance_window_id: int | None
    opened_at: datetime
    last_alert_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None

    def to_markdown(self) -> str:
        """The alert context block for an incident flow's artifact."""
        lines = [
            f"### Incident `{self.id}` — {self.status.value}",
            "",
            "| field | value |",
            "|---|---|",
            f"| route | {self.route} |",
            f"| target | {self.target} |",
            f"| group | {self.group_key or '—'} |",
            f"| severity | {self.severity.value} |",
            f"| alert | {_cell(self.title)} |",
            f"| summary | {_cell(self.summary)} |",
            f"| sources | {', '.join(self.sources)} |",
            f"| firing alerts attached | {self.alert_count} |",
            f"| duplicate deliveries | {self.duplicate_count} |",
            f"| resolved alerts | {self.resolved_count} |",
            f"| reopened | {self.reopen_count} |",
            f"| opened | {self.opened_at.isoformat(timespec='seconds')} |",
            f"| last alert | {self.last_alert_at.isoformat(timespec='seconds')} |",
        ]
        if self.resolved_at:
            lines.append(
                f"| resolved | {self.resolved_at.isoformat(timespec='seconds')}"
                f" by {self.resolved_by or '?'} |"
            )
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Placement:
    """Where an alert goes: decided by the routing table, stored with the incident."""

    route: str
    flow: str | None
    target: str
    group_key: str
    suppressible: bool = True
    # (action, target): ("flow", "high-latency/runbook"), ("slack", "")
    actions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Recorded:
    incident_id: str | None
    outcome: Outcome
    alert_count: int


def _pg(text: str) -> str:
    """Postgres text holds no NUL and no lone surrogates: drop or replace them."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _pg_map(values: dict[str, str]) -> str:
    return json.dumps({_pg(k): _pg(v) for k, v in values.items()})


_RECORD = (
    "SELECT incident_id, outcome, alert_count FROM runbook.intake_record("
    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


async def record_alert(
    conn: Conn, alert: Alert, placement: Placement, *, cooldown_s: float = 300.0
) -> Recorded:
    """Persist one alert and open, coalesce, reopen, suppress or resolve its incident.

    Atomic (one statement); the dispatch of a new incident is queued in the same transaction.
    """
    cur = await conn.execute(
        _RECORD,
        (
            placement.route,
            placement.flow,
            _pg(placement.target),
            _pg(placement.group_key),
            placement.suppressible,
            [a for a, _ in placement.actions],
            [t for _, t in placement.actions],
            cooldown_s,
            alert.source,
            _pg(alert.name),
            alert.status.value,
            alert.severity.value,
            _pg(alert.summary),
            _pg_map(alert.labels),
            _pg_map(alert.annotations),
            _pg(alert.fingerprint),
            _pg(alert.delivery_id) if alert.delivery_id else None,
            alert.starts_at,
        ),
    )
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - the function always returns a row
        raise RuntimeError("intake_record returned nothing")
    incident_id, outcome, count = row
    return Recorded(
        incident_id=str(incident_id) if incident_id else None,
        outcome=Outcome(outcome),
        alert_count=int(count or 0),
    )


def _record_json(alert: Alert, placement: Placement) -> dict[str, Any]:
    return {
        "route": placement.route,
        "flow": placement.flow,
        "target": _pg(placement.target),
        "group": _pg(placement.group_key),
        "suppressible": placement.suppressible,
        "actions": [a for a, _ in placement.actions],
        "action_targets": [t for _, t in placement.actions],
        "source": alert.source,
        "name": _pg(alert.name),
        "status": alert.status.value,
        "severity": alert.severity.value,
        "summary": _pg(alert.summary),
        "labels": {_pg(k): _pg(v) for k, v in alert.labels.items()},
        "annotations": {_pg(k): _pg(v) for k, v in alert.annotations.items()},
        "fingerprint": _pg(alert.fingerprint),
        "delivery_id": _pg(alert.delivery_id) if alert.delivery_id else None,
        "starts_at": alert.starts_at.isoformat() if alert.starts_at else None,
    }


async def record_alerts(
    conn: Conn, items: Sequence[tuple[Alert, Placement]], *, cooldown_s: float = 300.0
) -> list[Recorded]:
    """`record_alert` for many alerts in one statement: one round trip, all or nothing.

    Results are in the order of `items`. Incidents are locked in key order, so concurrent
    batches do not deadlock on them.
    """
    if not items:
        return []
    cur = await conn.execute(
        "SELECT ord, incident_id, outcome, alert_count"
        " FROM runbook.intake_record_batch(%s::jsonb, %s)",
        (orjson.dumps([_record_json(a, p) for a, p in items]).decode(), cooldown_s),
    )
    results: list[Recorded | None] = [None] * len(items)
    for ord_, incident_id, outcome, count in await cur.fetchall():
        results[ord_ - 1] = Recorded(
            incident_id=str(incident_id) if incident_id else None,
            outcome=Outcome(outcome),
            alert_count=int(count or 0),
        )
    if any(r is None for r in results):  # pragma: no cover - the function answers every record
        raise RuntimeError("intake_record_batch skipped a record")
    return [r for r in results if r is not None]


_COLUMNS = (
    "id, route, flow, target, group_key, status, severity, title, summary, labels, annotations,"
    " sources, alert_count, duplicate_count, resolved_count, reopen_count,"
    " maintenance_window_id, opened_at, last_alert_at, resolved_at, resolved_by"
)


def _incident(row: dict[str, Any]) -> Incident:
    return Incident.model_validate({**row, "id": str(row["id"]), "sources": tuple(row["sources"])})


def _uuid(incident_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(incident_id)
    except ValueError:
        return None


async def get_incident(conn: Conn, incident_id: str) -> Incident | None:
    """The incident with this id, or None."""
    key = _uuid(incident_id)
    if key is None:
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM runbook.incidents WHERE id = %s", (key,))
        row = await cur.fetchone()
    return _incident(row) if row else None


async def find_active_incident(
    conn: Conn, route: str, target: str, group_key: str
) -> Incident | None:
    """The open or suppressed incident for a key, if there is one."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM runbook.incidents WHERE route = %s AND target = %s"
            " AND group_key = %s AND status IN ('open', 'suppressed')",
            (route, target, group_key),
        )
        row = await cur.fetchone()
    return _incident(row) if row else None


async def list_incidents(
    conn: Conn, *, status: IncidentStatus | None = None, limit: int = 100
) -> list[Incident]:
    """The newest incidents first, optionally only those with one status."""
    where, params = ("WHERE status = %s", [status.value]) if status else ("", [])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM runbook.incidents {where} ORDER BY opened_at DESC LIMIT %s",
            (*params, limit),
        )
        rows = await cur.fetchall()
    return [_incident(r) for r in rows]


async def resolve_incident(conn: Conn, incident_id: str, *, by: str) -> Incident | None:
    """Close an incident (e.g. a flow verified the fix); a pending flow dispatch is cancelled.

    Returns the incident as it is now, or None when there is no such incident. Resolving a
    resolved incident changes nothing.
    """
    key = _uuid(incident_id)
    if key is None:
        return None
    async with conn.transaction():
        await conn.execute(
            "UPDATE runbook.incidents SET status = 'resolved', resolved_at = now(),"
            " resolved_by = %s WHERE id = %s AND status <> 'resolved'",
            (by, key),
        )
        await conn.execute(
            "UPDATE runbook.outbox SET done_at = now(), result = 'cancelled'"
            " WHERE incident_id = %s AND action = 'flow' AND done_at IS NULL",
            (key,),
        )
    return await get_incident(conn, incident_id)


async def alerts_of(conn: Conn, incident_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest alerts attached to an incident (source, name, status, outcome, received_at)."""
    key = _uuid(incident_id)
    if key is None:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT received_at, source, name, status, severity, summary, outcome"
            " FROM runbook.alerts WHERE incident_id = %s ORDER BY id DESC LIMIT %s",
            (key, limit),
        )
        return list(await cur.fetchall())
