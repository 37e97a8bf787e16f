"""The support app's own Alembic project — what `alembic upgrade head` runs in the app's repo —
so `db-migrate` / `db-downgrade` change real schemas in the sandbox.

* `0001_baseline` — the schema `sandbox.appdb.prepare()` creates; the sandbox stamps its
  production and staging databases at it when it starts;
* `0002_conversation_csat` — pending: a nullable `conversations.csat_score` column.

`PATH` is the script location (`RUNBOOK_APP_MIGRATIONS_PATH` in the sandbox's environment). A
manual deploy of an `a1e…` commit names `HEAD` in its deployment meta (`migration`): the app
code it runs needs that migration (`sandbox.platform`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parent
BASELINE = "0001_baseline"
HEAD = "0002_conversation_csat"


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` → `postgresql+psycopg://…` (psycopg 3)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if sep and "+" not in scheme else url


def config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(PATH))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def stamp_baseline(url: str) -> None:
    """Mark a database `prepare()` made as being at the baseline (once: a stamped one is left)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            stamped = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    if not stamped:
        command.stamp(config(url), BASELINE)
