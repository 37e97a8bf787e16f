"""The platform's Postgres (the runbook's `$DATABASE_URL`), not our own ledger database."""

from __future__ import annotations

from typing import Any, Self

import psycopg
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings


class AppDatabase(RunbookBlock):
    """Connection to the support platform's database (a read-only `pg_monitor` role is enough)."""

    _block_type_name = "Runbook App Database"
    _block_type_slug = "runbook-app-database"

    url: SecretStr = Field(description="postgresql://user:password@host:5432/dbname")
    connect_timeout_s: int = Field(3, ge=1)
    statement_timeout_ms: int = Field(10_000, ge=100)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(url=settings.app_database_url)

    async def get_client(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """An open autocommit connection with a statement timeout; the caller closes it."""
        return await psycopg.AsyncConnection.connect(
            self.url.get_secret_value(),
            connect_timeout=self.connect_timeout_s,
            autocommit=True,
            options=f"-c statement_timeout={self.statement_timeout_ms}",
        )
