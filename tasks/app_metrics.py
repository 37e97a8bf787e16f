"""The runbook's own SQL on the platform's database: `messages`, `conversations`, sessions.

Runbook §1 "Check error distribution":
    SELECT intent, COUNT(*) FROM messages WHERE created_at > NOW() - INTERVAL '1 hour'
      AND role = 'assistant' AND metadata->>'error' IS NOT NULL GROUP BY intent;
plus the error rate over a shorter window, and — as the "slow queries" signal when
`pg_stat_statements` is absent — statements that have been running for a long time; and
"Key Metrics to Watch" (`get_key_metrics`: every rate of the table in one round trip).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.app_database import AppDatabase
from runbook.errors import PermanentError, TransientError
from runbook.retry import retrying

SERVICE = "app database"
_SINCE = "AND (%(since)s::timestamptz IS NULL OR created_at > %(since)s::timestamptz)"


class ErrorRate(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: int
    replies: int
    errors: int
    rate_pct: float


class ErrorDistribution(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: int
    by_intent: dict[str, int]
    samples: dict[str, str]  # intent -> one error message (truncated)

    @property
    def total(self) -> int:
        return sum(self.by_intent.values())


class LongQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    pid: int
    seconds: float
    state: str
    application: str
    query: str


class LongRunningQueries(BaseModel):
    model_config = ConfigDict(frozen=True)

    min_seconds: float
    queries: tuple[LongQuery, ...]

    @property
    def count(self) -> int:
        return len(self.queries)


async def _fetch(db: AppDatabase, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async def once() -> list[tuple[Any, ...]]:
        try:
            async with await db.get_client() as conn, conn.cursor() as cur:
                await cur.execute(sql, params)  # type: ignore[arg-type]  # constant SQL only
                return await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise TransientError(f"{SERVICE}: {type(exc).__name__}") from None
        except psycopg.Error as exc:
            raise PermanentError(f"{SERVICE}: {type(exc).__name__}") from None

    return await retrying(once, attempts=2)


@task(name="get-app-error-rate", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_error_rate(
    db: AppDatabase, window_s: int = 300, since: datetime | None = None
) -> ErrorRate:
    """Share of assistant replies that carry `metadata.error` in the last `window_s` seconds
    (and, with `since`, only after that moment — e.g. verifying an act measures from the act)."""
    rows = await _fetch(
        db,
        "SELECT count(*), count(*) FILTER (WHERE metadata->>'error' IS NOT NULL)"
        " FROM messages WHERE created_at > now() - %(window)s AND role = 'assistant'"
        f" {_SINCE}",
        {"window": timedelta(seconds=window_s), "since": since},
    )
    replies, errors = int(rows[0][0]), int(rows[0][1])
    rate = 100.0 * errors / replies if replies else 0.0
    return ErrorRate(window_s=window_s, replies=replies, errors=errors, rate_pct=round(rate, 2))


@task(name="get-app-error-distribution", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_error_distribution(
    db: AppDatabase, window_s: int = 3600, since: datetime | None = None
) -> ErrorDistribution:
    """The runbook's error-distribution query (errors by intent), with one sample per intent."""
    rows = await _fetch(
        db,
        "SELECT intent, COUNT(*), min(metadata->>'error') FROM messages"
        " WHERE created_at > NOW() - %(window)s AND role = 'assistant'"
        f" AND metadata->>'error' IS NOT NULL {_SINCE} GROUP BY intent ORDER BY 2 DESC",
        {"window": timedelta(seconds=window_s), "since": since},
    )
    return ErrorDistribution(
        window_s=window_s,
        by_intent={str(intent): int(n) for intent, n, _ in rows},
        samples={str(intent): str(sample)[:200] for intent, _, sample in rows},
    )


@task(name="get-long-running-queries", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_long_running_queries(db: AppDatabase, min_seconds: float = 5.0) -> LongRunningQueries:
    """Active statements running longer than `min_seconds` (pg_stat_activity), longest first."""
    rows = await _fetch(
        db,
        "SELECT pid, extract(epoch FROM now() - query_start)::float8, state,"
        " coalesce(application_name, ''), left(query, 200) FROM pg_stat_activity"
        " WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        # the app's database only: another database on the same server is not this app's
        # slow query (and not something its remediation could fix)
        " AND datname = current_database()"
        " AND query_start < now() - %(min)s ORDER BY query_start",
        {"min": timedelta(seconds=min_seconds)},
    )
    return LongRunningQueries(
        min_seconds=min_seconds,
        queries=tuple(
            LongQuery(
                pid=int(p),
                seconds=round(float(s), 1),
                state=str(st),
                application=str(a),
                query=str(q),
            )
            for p, s, st, a, q in rows
        ),
    )


class ErrorCauses(BaseModel):
    """Errors in the window grouped by what failed (from the error message's wording)."""

    model_config = ConfigDict(frozen=True)

    window_s: int
    by_cause: dict[str, int]  # llm | integration | database | application


_CAUSE_SQL = """
SELECT CASE
    WHEN e ~* '(\\mllm\\M|openai|\\mmodel\\M|rate.?limit|\\m429\\M|overloaded)' THEN 'llm'
    WHEN e ~* '(integration|shopify|gorgias)' THEN 'integration'
    WHEN e ~* ('(database|postgres|psycopg|connection pool|pool exhausted'
               '|connection refused|too many connections)') THEN 'database'
    ELSE 'application' END AS cause, count(*)
FROM (SELECT metadata->>'error' AS e FROM messages
      WHERE created_at > now() - %(window)s AND role = 'assistant'
        AND metadata->>'error' IS NOT NULL) errors
GROUP BY 1
"""


@task(name="get-app-error-causes", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_error_causes(db: AppDatabase, window_s: int = 120) -> ErrorCauses:
    """Every error of the window counted by cause (not one sample per intent)."""
    rows = await _fetch(db, _CAUSE_SQL, {"window": timedelta(seconds=window_s)})
    return ErrorCauses(window_s=window_s, by_cause={str(c): int(n) for c, n in rows})


@task(name="count-app-errors-matching", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def count_errors_matching(db: AppDatabase, pattern: str, window_s: int = 30) -> int:
    """How many errors of the window match `pattern` (a case-insensitive regex)."""
    rows = await _fetch(
        db,
        "SELECT count(*) FROM messages WHERE created_at > now() - %(window)s"
        " AND role = 'assistant' AND metadata->>'error' ~* %(pattern)s",
        {"window": timedelta(seconds=window_s), "pattern": pattern},
    )
    return int(rows[0][0])


class KeyMetrics(BaseModel):
    """Runbook "Key Metrics to Watch" as the app database shows them, over one window ending at
    `until`: replies and their errors and P99 latency (`messages`), conversation outcomes
    (`conversations`) and the app's own sessions (`pg_stat_activity`). A rate over nothing is
    None (no data), never 0."""

    model_config = ConfigDict(frozen=True)

    window_s: int
    until: datetime
    replies: int
    errors: int
    p99_latency_s: float | None
    outcomes: int  # conversations that reached an outcome (resolved or escalated) in the window
    ai_resolved: int
    escalated: int
    app_connections: int

    @staticmethod
    def _pct(part: int, whole: int) -> float | None:
        return round(100.0 * part / whole, 2) if whole else None

    @property
    def error_rate_pct(self) -> float | None:
        return self._pct(self.errors, self.replies)

    @property
    def automation_rate_pct(self) -> float | None:
        """Share of the window's outcomes the AI resolved without a human."""
        return self._pct(self.ai_resolved, self.outcomes)

    @property
    def escalation_rate_pct(self) -> float | None:
        """Share of the window's outcomes handed to a human (status `escalated`)."""
        return self._pct(self.escalated, self.outcomes)


# One round trip (docs/policy.md "Key metrics: the SQL"). The window is (until - window, until];
# `until` defaults to the server's now().
_KEY_METRICS_SQL = """
WITH bounds AS (SELECT coalesce(%(until)s::timestamptz, now()) AS hi),
replies AS (
    SELECT count(*) AS replies,
           count(*) FILTER (WHERE m.metadata->>'error' IS NOT NULL) AS errors,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY (m.metadata->>'latency_ms')::float8)
               FILTER (WHERE m.metadata ? 'latency_ms') AS p99_ms
    FROM messages m, bounds b
    WHERE m.role = 'assistant' AND m.created_at > b.hi - %(window)s AND m.created_at <= b.hi),
outcomes AS (
    SELECT count(*) AS outcomes,
           count(*) FILTER (WHERE c.status = 'resolved' AND c.resolved_by = 'ai') AS ai,
           count(*) FILTER (WHERE c.status = 'escalated') AS escalated
    FROM conversations c, bounds b
    WHERE c.status IN ('resolved', 'escalated')
      AND c.updated_at > b.hi - %(window)s AND c.updated_at <= b.hi),
sessions AS (
    SELECT count(*) AS app FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND datname = current_database()
      AND pid <> pg_backend_pid())
SELECT r.replies, r.errors, r.p99_ms, o.outcomes, o.ai, o.escalated, s.app, b.hi
FROM replies r, outcomes o, sessions s, bounds b
"""


@task(name="get-key-metrics", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_key_metrics(
    db: AppDatabase, window_s: int = 300, until: datetime | None = None
) -> KeyMetrics:
    """Error rate, P99 latency, automation and escalation rate and the app's sessions, in one
    SQL round trip (the key-metrics watch runs every minute: it must stay cheap)."""
    rows = await _fetch(
        db, _KEY_METRICS_SQL, {"window": timedelta(seconds=window_s), "until": until}
    )
    replies, errors, p99_ms, outcomes, ai, escalated, app, hi = rows[0]
    return KeyMetrics(
        window_s=window_s,
        until=hi,
        replies=int(replies),
        errors=int(errors),
        p99_latency_s=round(float(p99_ms) / 1000, 3) if p99_ms is not None else None,
        outcomes=int(outcomes),
        ai_resolved=int(ai),
        escalated=int(escalated),
        app_connections=int(app),
    )
