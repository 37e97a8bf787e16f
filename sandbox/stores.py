"""Where the sandbox keeps the platform's data: which Postgres and Redis, and its own database.

A server that was named but does not answer is replaced by an embedded one — never silently by
another real server; none named → the machine's local server, else embedded
(`sandbox.local.embedded`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sandbox.local import embedded


def with_db(url: str, dbname: str, host: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if host is not None:
        creds = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        netloc = f"{creds}{host}:{port}"
    return urlunsplit((parts.scheme, netloc, f"/{dbname}", parts.query, ""))


def resolve(
    preferred: str | None,
    default_port: int,
    fallback: Callable[[str | None, Path], str],
    data_dir: Path,
) -> str:
    """A given server if it answers; a given one that does not → embedded (never silently
    another real server); none given → the local default or embedded (`sandbox.local.embedded`)."""
    if preferred:
        parts = urlsplit(preferred)
        if embedded.reachable(parts.hostname or "127.0.0.1", parts.port or default_port):
            return preferred
        return _embedded_for(default_port, data_dir)
    return fallback(None, data_dir)


def _embedded_for(default_port: int, data_dir: Path) -> str:
    if default_port == 5432:
        return embedded.start_embedded_postgres(data_dir)
    return embedded.start_embedded_redis(data_dir)


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


async def create_database(server_url: str, dbname: str) -> None:
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


async def drop_database(server_url: str, dbname: str) -> None:
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
