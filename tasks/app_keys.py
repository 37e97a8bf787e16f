"""Store API keys and the access log in the platform's database (runbook "Security Procedures").

The app's schema, as the security flows rely on it:

    stores          id, name, active, contact_email (where a store wants its keys sent)
    store_api_keys  id, store_id, key_prefix, key_hash (sha256 hex; never the key), created_at,
                    last_used_at, revoked_at (rotation), disabled_at (containment)
    access_log      ts, store_id, key_prefix, ip, method, path, status (every request that
                    presented a key; refused ones have status 401/403)

A key authenticates while it is neither revoked nor disabled. Reads: `get_store`,
`get_store_keys`, `get_key_uses`, `get_access_lines`, `count_accepted_uses`,
`get_conversation_counts`. Acts: `insert_store_key`, `revoke_store_keys`, `disable_store_keys`.
A key's value is made by `new_store_key()` and exists only in its `SecretStr`; the database
gets its hash.

Writes need a role that may update `store_api_keys` (the checks are fine with a read-only one).
An act whose statement was sent and whose connection broke is `OutcomeUnknown` (the safety core
reconciles by reading the keys again).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from blocks.app_database import AppDatabase
from runbook import redact
from runbook.errors import OutcomeUnknown, PermanentError, TransientError
from runbook.retry import retrying

SERVICE = "app database"
KEY_PREFIX = "sk_store_"
PREFIX_LENGTH = 16  # the part of a key the app database and the access log keep in clear


class Store(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    active: bool
    contact_email: str | None


class StoreKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    store_id: str
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    disabled_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None and self.disabled_at is None


class NewStoreKey(BaseModel):
    """A key made here: the value (shown once, to the store), its prefix and its hash."""

    model_config = ConfigDict(frozen=True)

    value: SecretStr
    prefix: str
    sha256: str


class KeyUse(BaseModel):
    """Requests of the window from one address with one key, to one path (query cut off)."""

    model_config = ConfigDict(frozen=True)

    store_id: str | None
    key_prefix: str | None
    ip: str
    method: str
    path: str
    accepted: int  # status < 400
    denied: int  # 401 / 403
    first_seen: datetime
    last_seen: datetime


class AccessLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    ts: datetime
    store_id: str | None
    key_prefix: str | None
    ip: str
    method: str
    path: str
    status: int


def new_store_key() -> NewStoreKey:
    """A fresh store key (256 bits); registered with the log redaction at once."""
    value = KEY_PREFIX + secrets.token_urlsafe(32)
    redact.register(value)
    return NewStoreKey(
        value=SecretStr(value),
        prefix=value[:PREFIX_LENGTH],
        sha256=hashlib.sha256(value.encode()).hexdigest(),
    )


async def _run(
    db: AppDatabase, sql: str, params: dict[str, Any], *, write: bool = False
) -> list[tuple[Any, ...]]:
    """One statement; a read is retried once when transient, a write is sent once."""

    async def once() -> list[tuple[Any, ...]]:
        try:
            conn = await db.get_client()
        except psycopg.Error as exc:  # nothing was sent
            raise TransientError(f"{SERVICE}: {type(exc).__name__}") from None
        async with conn, conn.cursor() as cur:
            try:
                await cur.execute(sql, params)  # type: ignore[arg-type]  # constant SQL only
                return await cur.fetchall() if cur.description else []
            except psycopg.OperationalError as exc:
                if write:
                    raise OutcomeUnknown(
                        f"{SERVICE}: {type(exc).__name__} after the change was sent"
                    ) from None
                raise TransientError(f"{SERVICE}: {type(exc).__name__}") from None
            except psycopg.Error as exc:
                raise PermanentError(f"{SERVICE}: {type(exc).__name__}") from None

    if write:
        return await once()
    return await retrying(once, attempts=2)


_KEY_COLUMNS = "id, store_id, key_prefix, created_at, last_used_at, revoked_at, disabled_at"


def _key(row: Sequence[Any]) -> StoreKey:
    return StoreKey(
        id=int(row[0]),
        store_id=str(row[1]),
        key_prefix=str(row[2]),
        created_at=row[3],
        last_used_at=row[4],
        revoked_at=row[5],
        disabled_at=row[6],
    )


@task(name="get-app-store", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_store(db: AppDatabase, store_id: str) -> Store | None:
    """The store, or None when the app database has no such store."""
    rows = await _run(
        db, "SELECT id, name, active, contact_email FROM stores WHERE id = %(id)s", {"id": store_id}
    )
    if not rows:
        return None
    sid, name, active, contact = rows[0]
    return Store(id=str(sid), name=str(name), active=bool(active), contact_email=contact or None)


@task(name="get-app-stores", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_stores(db: AppDatabase, store_ids: list[str]) -> tuple[Store, ...]:
    """The stores among `store_ids` that exist."""
    rows = await _run(
        db,
        "SELECT id, name, active, contact_email FROM stores WHERE id = ANY(%(ids)s) ORDER BY id",
        {"ids": list(store_ids)},
    )
    return tuple(
        Store(id=str(i), name=str(n), active=bool(a), contact_email=c or None)
        for i, n, a, c in rows
    )


@task(name="get-app-store-keys", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_store_keys(
    db: AppDatabase, store_ids: list[str] | None = None
) -> tuple[StoreKey, ...]:
    """Every key of these stores (all stores when None), oldest first."""
    rows = await _run(
        db,
        f"SELECT {_KEY_COLUMNS} FROM store_api_keys"
        " WHERE %(ids)s::text[] IS NULL OR store_id = ANY(%(ids)s::text[]) ORDER BY id",
        {"ids": None if store_ids is None else list(store_ids)},
    )
    return tuple(_key(r) for r in rows)


@task(name="get-app-key-by-hash", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_key_by_hash(db: AppDatabase, sha256: str) -> StoreKey | None:
    rows = await _run(
        db, f"SELECT {_KEY_COLUMNS} FROM store_api_keys WHERE key_hash = %(h)s", {"h": sha256}
    )
    return _key(rows[0]) if rows else None


@task(name="insert-store-key", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def insert_store_key(db: AppDatabase, store_id: str, prefix: str, sha256: str) -> StoreKey:
    """Store a new key's hash for the store (the key itself is never sent here)."""
    rows = await _run(
        db,
        "INSERT INTO store_api_keys (store_id, key_prefix, key_hash)"
        f" VALUES (%(store)s, %(prefix)s, %(hash)s) RETURNING {_KEY_COLUMNS}",
        {"store": store_id, "prefix": prefix, "hash": sha256},
        write=True,
    )
    return _key(rows[0])


@task(name="revoke-store-keys", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def revoke_store_keys(db: AppDatabase, store_id: str, key_ids: list[int]) -> list[int]:
    """Revoke these keys of the store (for good); returns the ids revoked now."""
    rows = await _run(
        db,
        "UPDATE store_api_keys SET revoked_at = now() WHERE store_id = %(store)s"
        " AND id = ANY(%(ids)s) AND revoked_at IS NULL RETURNING id",
        {"store": store_id, "ids": [int(i) for i in key_ids]},
        write=True,
    )
    return sorted(int(r[0]) for r in rows)


@task(name="disable-store-keys", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def disable_store_keys(db: AppDatabase, key_ids: list[int]) -> list[int]:
    """Disable these keys (containment: refused at once, kept for the investigation); returns
    the ids disabled now."""
    rows = await _run(
        db,
        "UPDATE store_api_keys SET disabled_at = now() WHERE id = ANY(%(ids)s)"
        " AND disabled_at IS NULL AND revoked_at IS NULL RETURNING id",
        {"ids": [int(i) for i in key_ids]},
        write=True,
    )
    return sorted(int(r[0]) for r in rows)


@task(name="get-app-key-uses", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_key_uses(db: AppDatabase, window_s: int) -> tuple[KeyUse, ...]:
    """The access log of the last `window_s` seconds, grouped by store, key prefix, address,
    method and path (without its query string)."""
    rows = await _run(
        db,
        "SELECT store_id, key_prefix, coalesce(ip, ''), coalesce(method, ''),"
        " split_part(coalesce(path, ''), '?', 1),"
        " count(*) FILTER (WHERE status < 400), count(*) FILTER (WHERE status IN (401, 403)),"
        " min(ts), max(ts) FROM access_log WHERE ts > now() - %(window)s"
        " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3",
        {"window": timedelta(seconds=window_s)},
    )
    return tuple(
        KeyUse(
            store_id=s,
            key_prefix=k,
            ip=str(ip),
            method=str(m),
            path=str(p),
            accepted=int(a),
            denied=int(d),
            first_seen=f,
            last_seen=last,
        )
        for s, k, ip, m, p, a, d, f, last in rows
    )


@task(name="get-app-access-lines", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_access_lines(
    db: AppDatabase, window_s: int, stores: list[str], ips: list[str], limit: int = 200
) -> tuple[AccessLine, ...]:
    """Access-log lines of the window that involve these stores or addresses, newest first."""
    rows = await _run(
        db,
        "SELECT ts, store_id, key_prefix, coalesce(ip, ''), coalesce(method, ''),"
        " coalesce(path, ''), coalesce(status, 0) FROM access_log"
        " WHERE ts > now() - %(window)s AND (store_id = ANY(%(stores)s) OR ip = ANY(%(ips)s))"
        " ORDER BY ts DESC, id DESC LIMIT %(limit)s",
        {
            "window": timedelta(seconds=window_s),
            "stores": list(stores),
            "ips": list(ips),
            "limit": limit,
        },
    )
    return tuple(
        AccessLine(ts=t, store_id=s, key_prefix=k, ip=str(i), method=str(m), path=str(p), status=st)
        for t, s, k, i, m, p, st in rows
    )


@task(name="count-accepted-key-uses", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def count_accepted_uses(db: AppDatabase, key_ids: list[int], since: datetime) -> int:
    """Requests accepted (status < 400) with these keys' prefixes since `since`."""
    rows = await _run(
        db,
        "SELECT count(*) FROM access_log a JOIN store_api_keys k"
        " ON k.store_id = a.store_id AND k.key_prefix = a.key_prefix"
        " WHERE k.id = ANY(%(ids)s) AND a.ts > %(since)s AND a.status < 400",
        {"ids": [int(i) for i in key_ids], "since": since},
    )
    return int(rows[0][0])


@task(name="get-app-conversation-counts", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_conversation_counts(
    db: AppDatabase, stores: list[str], window_s: int
) -> dict[str, int]:
    """Conversations per store in the window: whose customers' data the keys could reach."""
    rows = await _run(
        db,
        "SELECT store_id, count(*) FROM conversations WHERE store_id = ANY(%(stores)s)"
        " AND created_at > now() - %(window)s GROUP BY 1",
        {"stores": list(stores), "window": timedelta(seconds=window_s)},
    )
    counts = dict.fromkeys(stores, 0)
    counts.update({str(s): int(n) for s, n in rows})
    return counts
