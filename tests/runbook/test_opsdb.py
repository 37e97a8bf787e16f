"""The ops database's migrations on a real PostgreSQL: applied once on a new database, found
applied by every later process with one read, and a newer file is still applied."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from runbook import opsdb
from tests.conftest import throwaway_database

pytestmark = pytest.mark.integration


@pytest.fixture
def new_database() -> Iterator[str]:
    with throwaway_database("runbook_opsdb") as url:
        yield url


def applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM runbook.schema_migrations")]


async def test_a_new_database_gets_every_migration_and_a_later_process_applies_none(
    new_database: str,
) -> None:
    files = [p.name for p in opsdb.migration_files()]
    async with await psycopg.AsyncConnection.connect(new_database, autocommit=True) as conn:
        assert await opsdb.migrate(conn) == files
    assert sorted(applied(new_database)) == files
    async with await psycopg.AsyncConnection.connect(new_database, autocommit=True) as conn:
        assert await opsdb.migrate(conn) == [], "a migration ran twice"


async def test_a_database_one_migration_behind_gets_the_newest_one(new_database: str) -> None:
    files = opsdb.migration_files()
    with psycopg.connect(new_database, autocommit=True) as conn:  # as the previous release left it
        conn.execute("CREATE SCHEMA runbook")
        conn.execute("CREATE TABLE runbook.schema_migrations (name text PRIMARY KEY)")
        for path in files[:-1]:
            conn.execute(path.read_text())  # type: ignore[arg-type]
            conn.execute("INSERT INTO runbook.schema_migrations VALUES (%s)", (path.name,))
    async with await psycopg.AsyncConnection.connect(new_database, autocommit=True) as conn:
        assert await opsdb.migrate(conn) == [files[-1].name]
    assert sorted(applied(new_database)) == [p.name for p in files]
