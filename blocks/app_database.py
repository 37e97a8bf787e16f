"""The platform's Postgres (the runbook's `$DATABASE_URL`), not our own ledger database."""

from __future__ import annotations

from typing import Any, Self

import psycopg
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.errors import ConfigurationError
from runbook.settings import Settings

# the app's main read path (db-migrate's verify): both tables the support assistant reads
SMOKE_QUERY = (
    "SELECT c.id, c.status, m.role, m.metadata FROM conversations c"
    " JOIN messages m ON m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1"
)


class AppDatabase(RunbookBlock):
    """Connection to the support platform's database (a read-only `pg_monitor` role is enough)."""

    _block_type_name = "Runbook App Database"
    _block_type_slug = "runbook-app-database"

    url: SecretStr = Field(description="postgresql://user:password@host:5432/dbname")
    connect_timeout_s: int = Field(3, ge=1)
    statement_timeout_ms: int = Field(10_000, ge=100)

    # the app's Alembic migrations (db-migrate / db-downgrade)
    migrations_path: str = Field(
        "",
        description="the app's Alembic script directory (the app repo's alembic/ with env.py;"
        " env.py must take the URL from Alembic's sqlalchemy.url); empty: not configured",
    )
    migrations_url: SecretStr | None = Field(
        None, description="a role that may change the schema (empty: `url`)"
    )
    migration_lock_timeout_ms: int = Field(
        5_000,
        ge=100,
        le=600_000,
        description="a migration that waits longer for a table lock fails (and changes nothing)"
        " instead of queueing the app's queries behind it",
    )
    smoke_query: str = Field(
        SMOKE_QUERY, description="the app's smoke query, run read-only after a migration"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(url=settings.app_database_url, migrations_path=settings.app_migrations_path)

    @classmethod
    def from_settings_for(cls, name: str | None, settings: Settings) -> Self:
        """Staging without a block document: `RUNBOOK_APP_STAGING_DATABASE_URL`, never the
        production database's URL (a migration meant for staging must not reach production)."""
        if name != "staging":
            return cls.from_settings(settings)
        if settings.app_staging_database_url is None:
            raise ConfigurationError(
                "staging has no app database: save a Runbook App Database block named"
                " 'staging' or set RUNBOOK_APP_STAGING_DATABASE_URL"
            )
        return cls(
            url=settings.app_staging_database_url, migrations_path=settings.app_migrations_path
        )

    async def get_client(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """An open autocommit connection with a statement timeout; the caller closes it."""
        return await psycopg.AsyncConnection.connect(
            self.url.get_secret_value(),
            connect_timeout=self.connect_timeout_s,
            autocommit=True,
            options=f"-c statement_timeout={self.statement_timeout_ms}",
        )
