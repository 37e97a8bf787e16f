"""The app's Alembic migrations — runbook "Deployment Procedures → Database Migrations"
(`DATABASE_URL=$STAGING_DB alembic upgrade head`, then production) and "Rollback"
(`alembic downgrade -1`).

Reads: `get_migration_state` (the database's heads against the scripts' heads, what upgrading
to a revision would apply, what `downgrade -1` would leave), `run_smoke_query`.
Acts: `upgrade_database` (to one exact revision), `downgrade_database` (exactly the head it was
approved for, one step down).

Through Alembic's Python API (`Config` + `command`), never a shell: the script location is the
block's `migrations_path` (the app repo's alembic/), the URL goes in as `postgresql+psycopg://…`
with `%` doubled (Alembic's config interpolates `%`). Alembic is synchronous and its `context` /
`op` proxies are process-global: every call runs in a worker thread, one at a time per process.
An act runs on our own connection (handed to env.py as `config.attributes["connection"]`, also
in `sqlalchemy.url`) with the block's `lock_timeout`, so a migration that waits for a busy table
fails instead of queueing the app's queries behind it. Postgres DDL is transactional: a failed
migration changed nothing; only a connection lost mid-way is an unknown outcome (reconciled by
reading the heads again).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.app_database import AppDatabase
from runbook.errors import (
    ConfigurationError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)
from runbook.retry import retrying

SERVICE = "app migrations"
BASE = "base"  # Alembic's name for "no migration applied"
T = TypeVar("T")
_ALEMBIC = threading.Lock()


class MigrationState(BaseModel):
    """Where one database stands against the app's migration scripts."""

    model_config = ConfigDict(frozen=True)

    database: str  # host:port/dbname, no credentials
    script_heads: tuple[str, ...]
    db_heads: tuple[str, ...]  # empty: no migration applied (base)
    unknown_heads: tuple[str, ...] = ()  # in the database, not in the scripts (newer code ran)
    applied: tuple[str, ...] = ()  # the database's history: its heads and every revision below
    requested: str = "head"
    target: str | None = None  # the requested revision resolved; None: not one of the scripts'
    to_apply: tuple[str, ...] = ()  # what upgrading to `target` applies, oldest first
    down_to: str | None = None  # what `downgrade -1` leaves ("base"); None: not one known head
    docs: dict[str, str] = {}  # revision -> its message (to apply, and the heads)

    @property
    def pending(self) -> bool:
        """APIS.md: the scripts' heads differ from the database's."""
        return set(self.script_heads) != set(self.db_heads)


class SmokeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool
    detail: str
    seconds: float = 0.0


class MigrationChange(BaseModel):
    """What an act changed: the database's heads before and after."""

    model_config = ConfigDict(frozen=True)

    action: str
    database: str
    from_heads: tuple[str, ...]
    to_heads: tuple[str, ...]


def where(url: str) -> str:
    """host:port/dbname of a database URL (never its credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def alembic_url(url: str, options: dict[str, str]) -> str:
    """The psycopg 3 SQLAlchemy URL with libpq `options` added (credentials kept as given)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.update_query_dict(options).render_as_string(hide_password=False)


def _options(db: AppDatabase, *, act: bool) -> dict[str, str]:
    if act:
        timeout = f"lock_timeout={db.migration_lock_timeout_ms}"
    else:
        timeout = f"statement_timeout={db.statement_timeout_ms}"
    return {"connect_timeout": str(db.connect_timeout_s), "options": f"-c {timeout}"}


def _url(db: AppDatabase, *, act: bool) -> str:
    raw = (db.migrations_url if act and db.migrations_url else db.url).get_secret_value()
    return alembic_url(raw, _options(db, act=act))


def _config(db: AppDatabase, url: str) -> Any:
    from alembic.config import Config

    path = db.migrations_path.strip()
    if not path:
        raise ConfigurationError(
            f"{SERVICE}: no Alembic script directory configured (the Runbook App Database"
            " block's migrations_path, RUNBOOK_APP_MIGRATIONS_PATH)"
        )
    if not (Path(path) / "env.py").is_file():
        raise ConfigurationError(f"{SERVICE}: {path} is not an Alembic script directory")
    cfg = Config()
    cfg.set_main_option("script_location", path)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _script(cfg: Any) -> Any:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(cfg)
    except CommandError as exc:
        raise ConfigurationError(f"{SERVICE}: {exc}") from None


def _revision(script: Any, rev: str) -> Any:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        found = script.get_revision(rev)
    except (CommandError, RevisionError):
        return None
    return found if found is not None and found.revision == rev else None


def _db_error(exc: Exception) -> str:
    """A driver error in one line, from the server's own words (never the URL)."""
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or type(orig).__name__
    return str(message)[:200]


def _connect(engine: Any) -> Any:
    from sqlalchemy.exc import DBAPIError

    try:
        return engine.connect()
    except DBAPIError as exc:  # nothing was sent
        raise TransientError(f"{SERVICE}: cannot connect ({type(exc.orig).__name__})") from None


def _heads(conn: Any) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def _state(db: AppDatabase, requested: str) -> MigrationState:
    from sqlalchemy import create_engine, pool

    url = _url(db, act=False)
    with _ALEMBIC:
        script = _script(_config(db, url))
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with _connect(engine) as conn:
                db_heads = _heads(conn)
        finally:
            engine.dispose()
        script_heads = tuple(sorted(script.get_heads()))
        known = {h: _revision(script, h) for h in db_heads}
        unknown = tuple(h for h, rev in known.items() if rev is None)
        applied: list[str] = []
        if not unknown:
            for head in db_heads:
                applied += [r.revision for r in script.walk_revisions(BASE, head)]
        if requested == "head":
            target = script_heads[0] if len(script_heads) == 1 else None
        else:
            found = _revision(script, requested)
            target = found.revision if found is not None else None
        to_apply: tuple[str, ...] = ()
        if target is not None and target not in applied and not unknown:
            line = [r.revision for r in script.walk_revisions(BASE, target)]
            to_apply = tuple(r for r in reversed(line) if r not in applied)
        down_to = None
        if len(db_heads) == 1 and not unknown:
            down = known[db_heads[0]].down_revision
            down_to = BASE if down is None else down if isinstance(down, str) else None
        docs = {
            r: str(rev.doc or "").strip()
            for r in {*to_apply, *(h for h in db_heads if h not in unknown)}
            if (rev := _revision(script, r)) is not None
        }
    return MigrationState(
        database=where(url),
        script_heads=script_heads,
        db_heads=db_heads,
        unknown_heads=unknown,
        applied=tuple(dict.fromkeys(applied)),
        requested=requested,
        target=target,
        to_apply=to_apply,
        down_to=down_to,
        docs=docs,
    )


def _change(db: AppDatabase, action: str, run: Callable[[Any, Any, tuple[str, ...]], None]) -> Any:
    """One Alembic command on our own connection, in one transaction (see the module docstring)."""
    from alembic.util import CommandError
    from sqlalchemy import create_engine, pool
    from sqlalchemy.exc import DBAPIError

    url = _url(db, act=True)
    with _ALEMBIC:
        cfg = _config(db, url)
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with _connect(engine) as conn:
                try:
                    with conn.begin():
                        before = _heads(conn)
                        cfg.attributes["connection"] = conn
                        run(cfg, conn, before)
                    after = _heads(conn)
                except CommandError as exc:
                    raise PermanentError(f"{SERVICE}: {action} refused by Alembic: {exc}") from None
                except DBAPIError as exc:
                    if getattr(getattr(exc.orig, "diag", None), "sqlstate", None):
                        # the server refused a statement: the transaction rolled back
                        raise PermanentError(
                            f"{SERVICE}: {action} failed, nothing changed: {_db_error(exc)}"
                        ) from None
                    raise OutcomeUnknown(
                        f"{SERVICE}: connection lost during the {action}"
                    ) from None
        finally:
            engine.dispose()
    return MigrationChange(action=action, database=where(url), from_heads=before, to_heads=after)


async def _in_thread(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


@task(name="get-migration-state", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_migration_state(db: AppDatabase, revision: str = "head") -> MigrationState:
    """The database's Alembic heads against the scripts' (`revision`: what an upgrade would
    aim at, "head" or a revision id)."""
    return await retrying(lambda: _in_thread(lambda: _state(db, revision)), attempts=2)


@task(name="run-app-smoke-query", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def run_smoke_query(db: AppDatabase) -> SmokeResult:
    """The app's smoke query (block `smoke_query`), in a read-only transaction: does the app's
    main read path still work on this schema? A failure is a result, not an error."""
    started = time.monotonic()
    try:
        async with await db.get_client() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            # prepare=True: the extended protocol runs exactly one statement, so a block's
            # `…; COMMIT; DROP …` cannot escape the read-only transaction
            cur = await conn.execute(db.smoke_query, prepare=True)  # type: ignore[arg-type]
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        return SmokeResult(ok=False, detail=f"smoke query failed: {_db_error(exc)}")
    seconds = round(time.monotonic() - started, 3)
    return SmokeResult(ok=True, detail=f"smoke query ok ({len(rows)} rows)", seconds=seconds)


@task(name="upgrade-database", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def upgrade_database(db: AppDatabase, revision: str) -> MigrationChange:
    """`alembic upgrade <revision>` (an exact revision, not "head": what was approved)."""
    from alembic import command

    def run(cfg: Any, conn: Any, before: tuple[str, ...]) -> None:
        command.upgrade(cfg, revision)

    return await _in_thread(lambda: _change(db, "upgrade", run))


@task(name="downgrade-database", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def downgrade_database(
    db: AppDatabase, from_revision: str, to_revision: str
) -> MigrationChange:
    """`alembic downgrade -1` of exactly `from_revision` (to `to_revision`); a database whose
    head is another one is left alone (PermanentError)."""
    from alembic import command

    def run(cfg: Any, conn: Any, before: tuple[str, ...]) -> None:
        if before != (from_revision,):
            now = ", ".join(before) or BASE
            raise PermanentError(
                f"{SERVICE}: the database's head is {now}, not {from_revision}: not downgraded"
            )
        command.downgrade(cfg, to_revision)

    return await _in_thread(lambda: _change(db, "downgrade", run))
