"""Store API keys on the simulated platform: how the support API authenticates a store, the
stores' own copies of their keys, and the `key-leak` fault's traces in the access log.

The app database keeps only a sha256 hash and a short prefix per key (`store_api_keys`); a key
is accepted while it is neither revoked nor disabled and its store is active. Every request that
presents a key leaves one `access_log` row (store, key prefix, client IP, method, path, status),
refused ones included — the log the security flows read.

`key-leak` plays an attacker holding the keys of some stores (default: store-318, store-427;
`target` = comma-separated store ids): from a few addresses that no store uses, it pulls
conversation exports and customer lists with each victim's key, and probes an admin path with
made-up keys (401s).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import psycopg

KEY_PREFIX = "sk_store_"
PREFIX_LENGTH = 16  # "sk_store_" + 7 characters: enough to tell a store's keys apart
LEAK_STORES = ("store-318", "store-427")
LEAK_IPS = ("185.220.101.7", "185.220.101.23", "185.220.101.41")
LEAK_PATHS = (
    ("GET", "/v1/conversations/export?since=2024-01-01"),
    ("GET", "/v1/customers?page=1"),
    ("GET", "/v1/customers?page=2"),
    ("GET", "/v1/customers?page=3"),
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def contact_for(store_id: str) -> str:
    """Where a store wants its keys sent (its owner's mailbox)."""
    return f"owner@{store_id}.example.com"


async def insert_key(conn: psycopg.AsyncConnection[Any], store_id: str) -> str:
    """A new live key for the store; returns the key (only the hash is stored)."""
    key = new_key()
    await conn.execute(
        "INSERT INTO store_api_keys (store_id, key_prefix, key_hash) VALUES (%s, %s, %s)",
        (store_id, key[:PREFIX_LENGTH], hash_key(key)),
    )
    return key


async def authenticate(
    conn: psycopg.AsyncConnection[Any], key: str
) -> tuple[str | None, str | None]:
    """(store id, name) of a live key; (None, None) when the key is unknown, revoked or disabled."""
    cur = await conn.execute(
        "UPDATE store_api_keys k SET last_used_at = now() FROM stores s"
        " WHERE k.key_hash = %s AND k.revoked_at IS NULL AND k.disabled_at IS NULL"
        " AND s.id = k.store_id AND s.active RETURNING s.id, s.name",
        (hash_key(key),),
    )
    row = await cur.fetchone()
    return (str(row[0]), str(row[1])) if row else (None, None)


async def log_access(
    conn: psycopg.AsyncConnection[Any],
    store_id: str | None,
    key: str,
    ip: str,
    method: str,
    path: str,
    status: int,
) -> None:
    await conn.execute(
        "INSERT INTO access_log (store_id, key_prefix, ip, method, path, status)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (store_id, key[:PREFIX_LENGTH] or None, ip, method, path, status),
    )


async def store_exists(conn: psycopg.AsyncConnection[Any], store_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM stores WHERE id = %s", (store_id,))
    return await cur.fetchone() is not None


async def write_leak(url: str, stores: list[str]) -> int:
    """The `key-leak` fault: an attacker's requests with the stores' live keys, and probes with
    made-up keys, written to the access log as the API logs them. Returns the rows written."""
    rows: list[tuple[Any, ...]] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT store_id, key_prefix FROM store_api_keys WHERE store_id = ANY(%s)"
            " AND revoked_at IS NULL AND disabled_at IS NULL ORDER BY id",
            (stores,),
        )
        live = await cur.fetchall()
        for n, (store, prefix) in enumerate(live):
            for m, (method, path) in enumerate(LEAK_PATHS):
                ip = LEAK_IPS[(n + m) % len(LEAK_IPS)]
                rows.append((store, prefix, ip, method, path, 200))
        for ip in LEAK_IPS:
            rows.append((None, new_key()[:PREFIX_LENGTH], ip, "GET", "/v1/admin/keys", 401))
        async with conn.cursor() as cur2:
            await cur2.executemany(
                "INSERT INTO access_log (ts, store_id, key_prefix, ip, method, path, status)"
                " VALUES (now() - interval '5 seconds', %s, %s, %s, %s, %s, %s)",
                rows,
            )
    return len(rows)


def leak_targets(target: str | None) -> list[str]:
    return [s.strip() for s in (target or "").split(",") if s.strip()] or list(LEAK_STORES)
