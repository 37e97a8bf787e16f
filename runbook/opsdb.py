"""Our own database (ledger, alert inbox, outbox): connection and automatic migrations.

`RUNBOOK_OPS_DATABASE_URL` if set, else the machine's PostgreSQL on 127.0.0.1:5432. Everything
lives in the `runbook` schema. Migrations are `runbook/migrations/NNN_name.sql`, applied in
order under an advisory lock (several intake copies and workers may start at once), each once.
Numbering: 0xx safety core (ledger), 1xx intake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from runbook.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_LOCK_ID = 0x52554E42  # "RUNB"


def ops_database_url() -> str:
    configured = get_settings().ops_database_url
    return configured.get_secret_value() if configured else DEFAULT_URL


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("[0-9][0-9][0-9]_*.sql"))


async def _all_applied(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> bool:
    """Every migration file is recorded as applied (one read, no lock): the common case for
    every process after the first, e.g. each flow run forked by `runbook serve`."""
    try:
        cur = await conn.execute("SELECT name FROM runbook.schema_migrations")
    except psycopg.errors.UndefinedTable:  # also for a missing schema: a new database
        return False
    done = {row[0] for row in await cur.fetchall()}
    return all(path.name in done for path in migration_files())


async def migrate(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[str]:
    """Apply pending migrations; returns the names applied now. Safe to call concurrently."""
    if conn.autocommit and await _all_applied(conn):
        return []
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS runbook")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS runbook.schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM runbook.schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for path in migration_files():
            if path.name in done:
                continue
            await conn.execute(path.read_text())  # type: ignore[arg-type]  # our own files
            await conn.execute(
                "INSERT INTO runbook.schema_migrations (name) VALUES (%s)", (path.name,)
            )
            applied_now.append(path.name)
    return applied_now


_migrated: set[str] = set()  # databases this process has migrated (once each)


async def connect(url: str | None = None) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """An autocommit connection to the ops database, migrated once per process (the first
    connection runs the migrations under their advisory lock; later ones take no lock)."""
    target = url or ops_database_url()
    conn = await psycopg.AsyncConnection.connect(target, autocommit=True, connect_timeout=5)
    if target not in _migrated:
        try:
            await migrate(conn)
        except BaseException:
            await conn.close()
            raise
        _migrated.add(target)
    return conn


async def open_pool(url: str | None = None, *, max_size: int = 10) -> AsyncConnectionPool:
    """A connection pool to the ops database (migrated before the pool opens)."""
    target = url or ops_database_url()
    conn = await connect(target)
    await conn.close()
    pool = AsyncConnectionPool(
        target, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True, timeout=10)
    return pool
