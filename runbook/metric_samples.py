"""The key-metrics watch's memory: one sample per run and environment — all of its SQL.

Each run stores what it measured (metric → value, None for no data), each metric's level and the
alert it raised, and reads back the previous run's sample in the same statement: the trend column
of its artifact, and the alert to resolve once a breach has ended. Samples older than a week are
deleted by the same statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

Conn = psycopg.AsyncConnection[Any]

_COLUMNS = "at, metrics, levels, alert"


class Sample(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    metrics: dict[str, float | None]
    levels: dict[str, str]
    alert: dict[str, Any] | None = None


def _sample(row: tuple[Any, ...] | None) -> Sample | None:
    if row is None:
        return None
    at, metrics, levels, alert = row
    return Sample(at=at, metrics=metrics or {}, levels=levels or {}, alert=alert)


async def record(
    conn: Conn,
    environment: str,
    metrics: dict[str, float | None],
    levels: Mapping[str, str],
    alert: dict[str, Any] | None,
) -> Sample | None:
    """Store this run's sample; returns the previous one of `environment` (one round trip)."""
    cur = await conn.execute(
        f"WITH prev AS (SELECT {_COLUMNS} FROM runbook.metric_samples WHERE environment = %s"
        "  ORDER BY id DESC LIMIT 1),"
        " ins AS (INSERT INTO runbook.metric_samples (environment, metrics, levels, alert)"
        "  VALUES (%s, %s, %s, %s)),"
        " old AS (DELETE FROM runbook.metric_samples WHERE at < now() - interval '7 days')"
        f" SELECT {_COLUMNS} FROM prev",
        (
            environment,
            environment,
            Jsonb(metrics),
            Jsonb(dict(levels)),
            Jsonb(alert) if alert is not None else None,
        ),
    )
    return _sample(await cur.fetchone())


async def latest(conn: Conn, environment: str) -> Sample | None:
    """The newest sample of `environment` (a dry run reads, never records)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM runbook.metric_samples WHERE environment = %s"
        " ORDER BY id DESC LIMIT 1",
        (environment,),
    )
    return _sample(await cur.fetchone())
