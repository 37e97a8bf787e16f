"""The platform's Postgres (runbook: Health Checks → Check Database, and §2/§4 diagnosis),
and the maintenance window's `VACUUM (ANALYZE)` of the largest tables."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from blocks.app_database import AppDatabase
from blocks.policy import Policy
from runbook.domain import CheckResult, Status, classify
from runbook.errors import PermanentError, TransientError
from tasks.observe import observe, result

COMPONENT = "postgres"


async def _rows(db: AppDatabase, sql: str) -> list[tuple[Any, ...]]:
    async with await db.get_client() as conn, conn.cursor() as cur:
        await cur.execute(sql)  # type: ignore[arg-type]  # constant SQL only
        return await cur.fetchall()


@task(
    name="get-pg-connections",
    task_run_name="get-pg-connections",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_pg_connections(db: AppDatabase, policy: Policy) -> CheckResult:
    """Connections against `max_connections` (runbook: `SELECT count(*) FROM pg_stat_activity`)."""
    limit = policy.threshold("db_connections_pct")

    async def probe() -> CheckResult:
        rows = await _rows(
            db,
            "SELECT count(*), count(*) FILTER (WHERE backend_type = 'client backend'),"
            " current_setting('max_connections')::int,"
            " count(*) FILTER (WHERE backend_type = 'client backend'"
            " AND datname = current_database() AND pid <> pg_backend_pid())"
            " FROM pg_stat_activity",
        )
        total, clients, max_conn, app = rows[0]
        pct = 100.0 * clients / max_conn
        return result(
            "pg_connections",
            COMPONENT,
            classify(pct, limit.warn, limit.critical),
            f"{clients} client connections of {max_conn} ({pct:.0f} %)",
            total=total,
            clients=clients,
            max_connections=max_conn,
            percent=round(pct, 1),
            app_connections=app,  # the app's own sessions on its database (not ours)
        )

    return await observe("pg_connections", COMPONENT, probe)


@task(
    name="get-pg-connections-by-state",
    task_run_name="get-pg-connections-by-state",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_pg_connections_by_state(db: AppDatabase, policy: Policy) -> CheckResult:
    """Client connections grouped by state; many `idle in transaction` ones hold the pool."""
    limit = policy.threshold("idle_in_transaction")

    async def probe() -> CheckResult:
        rows = await _rows(
            db,
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND datname = current_database()"
            " GROUP BY 1 ORDER BY 2 DESC",
        )
        by_state = {str(state): int(n) for state, n in rows}
        stuck = by_state.get("idle in transaction", 0) + by_state.get(
            "idle in transaction (aborted)", 0
        )
        summary = ", ".join(f"{k}: {v}" for k, v in by_state.items()) or "no client sessions"
        return result(
            "pg_connections_by_state",
            COMPONENT,
            classify(stuck, limit.warn, limit.critical),
            summary,
            by_state=by_state,
            idle_in_transaction=stuck,
        )

    return await observe("pg_connections_by_state", COMPONENT, probe)


@task(
    name="get-pg-slow-queries",
    task_run_name="get-pg-slow-queries",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_pg_slow_queries(db: AppDatabase, policy: Policy) -> CheckResult:
    """The ten statements with the highest mean time (`pg_stat_statements`, if installed)."""
    limit = policy.threshold("slow_query_mean_ms")

    async def probe() -> CheckResult:
        async with await db.get_client() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT current_setting('server_version_num')::int,"
                " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
            )
            row = await cur.fetchone()
            assert row is not None
            version, installed = row
            if not installed:
                return CheckResult.unavailable(
                    "pg_slow_queries",
                    COMPONENT,
                    "pg_stat_statements is not installed in this database",
                    optional=True,
                )
            column = "mean_exec_time" if version >= 130000 else "mean_time"
            try:
                await cur.execute(
                    f"SELECT query, calls, {column} FROM pg_stat_statements"
                    f" ORDER BY {column} DESC LIMIT 10"
                )
            except psycopg.errors.ObjectNotInPrerequisiteState:
                return CheckResult.unavailable(
                    "pg_slow_queries",
                    COMPONENT,
                    "pg_stat_statements is installed but not in shared_preload_libraries",
                    optional=True,
                )
            rows = await cur.fetchall()
        top: list[dict[str, Any]] = [
            {"query": str(q)[:200], "calls": int(c), "mean_ms": round(float(m), 2)}
            for q, c, m in rows
        ]
        worst = float(top[0]["mean_ms"]) if top else 0.0
        return result(
            "pg_slow_queries",
            COMPONENT,
            classify(worst, limit.warn, limit.critical),
            f"slowest mean {worst:.0f} ms" if top else "no statements recorded yet",
            top=top,
        )

    return await observe("pg_slow_queries", COMPONENT, probe)


@task(
    name="get-pg-table-sizes",
    task_run_name="get-pg-table-sizes",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_pg_table_sizes(db: AppDatabase) -> CheckResult:
    """Largest tables by total size (informational: always ok when readable)."""

    async def probe() -> CheckResult:
        rows = await _rows(
            db,
            "SELECT relname, pg_total_relation_size(relid),"
            " pg_size_pretty(pg_total_relation_size(relid))"
            " FROM pg_catalog.pg_statio_user_tables"
            " ORDER BY pg_total_relation_size(relid) DESC LIMIT 10",
        )
        tables = [{"table": str(n), "bytes": int(b), "size": str(p)} for n, b, p in rows]
        summary = (
            ", ".join(f"{t['table']} {t['size']}" for t in tables[:3]) if tables else "no tables"
        )
        return result("pg_table_sizes", COMPONENT, Status.OK, summary, tables=tables)

    return await observe("pg_table_sizes", COMPONENT, probe)


class Tables(BaseModel):
    """Tables by total size, largest first (schema-qualified)."""

    model_config = ConfigDict(frozen=True)

    names: tuple[str, ...]
    bytes: tuple[int, ...]


@task(name="get-largest-tables", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_largest_tables(db: AppDatabase, limit: int = 5) -> Tables:
    """The `limit` largest user tables (what the maintenance window vacuums)."""
    async with await db.get_client() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT schemaname, relname, pg_total_relation_size(relid)"
            " FROM pg_catalog.pg_stat_user_tables"
            " ORDER BY pg_total_relation_size(relid) DESC, relname LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
    return Tables(
        names=tuple(f"{schema}.{name}" for schema, name, _ in rows),
        bytes=tuple(int(size) for _, _, size in rows),
    )


def _identifier(table: str) -> sql.Identifier:
    schema, dot, name = table.partition(".")
    return sql.Identifier(schema, name) if dot else sql.Identifier(schema)


@task(name="vacuum-analyze", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def vacuum_analyze(
    db: AppDatabase, tables: list[str], timeout_s: int = 900
) -> dict[str, Any]:
    """`VACUUM (ANALYZE) t1, t2, …` in one statement (outside a transaction, as VACUUM must be),
    bounded by `timeout_s`. Changes no data; needs a role that owns the tables."""
    if not tables:
        return {"tables": [], "seconds": 0.0}
    statement = sql.SQL("VACUUM (ANALYZE) {}").format(
        sql.SQL(", ").join(_identifier(t) for t in tables)
    )
    started = time.perf_counter()
    try:
        async with await db.get_client() as conn:
            timeout = sql.SQL("SET statement_timeout = {}").format(int(timeout_s) * 1000)
            await conn.execute(timeout)
            await conn.execute(statement)
    except psycopg.OperationalError as exc:
        raise TransientError(f"{COMPONENT}: VACUUM: {type(exc).__name__}") from None
    except psycopg.Error as exc:
        raise PermanentError(f"{COMPONENT}: VACUUM refused: {type(exc).__name__}") from None
    return {"tables": list(tables), "seconds": round(time.perf_counter() - started, 2)}
