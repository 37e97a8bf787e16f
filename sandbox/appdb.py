"""The support platform's own database: schema, an hour of history, live traffic rows, and the
database faults that must be real (held pool connections, slow statements).

Tables follow what the runbook's SQL reads: `conversations`, `messages` (role, intent, `metadata`
jsonb with `error` on failures, `created_at`), plus `stores`, `store_api_keys` (sha256 hashes,
never the keys) and `access_log` for the security flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from sandbox import store_keys
from sandbox.behaviour import ChatOutcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    id text PRIMARY KEY, name text NOT NULL, plan text NOT NULL DEFAULT 'pro',
    active boolean NOT NULL DEFAULT true, contact_email text,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS store_api_keys (
    id bigserial PRIMARY KEY, store_id text NOT NULL REFERENCES stores(id),
    key_prefix text NOT NULL, key_hash text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz, revoked_at timestamptz, disabled_at timestamptz);
CREATE INDEX IF NOT EXISTS store_api_keys_hash ON store_api_keys (key_hash);
CREATE TABLE IF NOT EXISTS access_log (
    id bigserial PRIMARY KEY, ts timestamptz NOT NULL DEFAULT now(), store_id text,
    key_prefix text, ip text, method text, path text, status int);
CREATE INDEX IF NOT EXISTS access_log_ts ON access_log (ts);
CREATE TABLE IF NOT EXISTS conversations (
    id bigserial PRIMARY KEY, store_id text NOT NULL, status text NOT NULL
    CHECK (status IN ('open', 'resolved', 'escalated')),
    resolved_by text CHECK (resolved_by IN ('ai', 'human')),
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS messages (
    id bigserial PRIMARY KEY, conversation_id bigint NOT NULL REFERENCES conversations(id),
    role text NOT NULL CHECK (role IN ('user', 'assistant')), intent text, content text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at);
-- outcomes by when they were reached: what the key-metrics watch reads every minute
CREATE INDEX IF NOT EXISTS conversations_updated_at ON conversations (updated_at);
"""

STORES = ["store-123", "store-204", "store-318", "store-427", "store-555"]

# an hour of healthy history: one conversation every ~6 s, 0.3 % errors
SEED_HISTORY = """
WITH c AS (
  INSERT INTO conversations (store_id, status, resolved_by, created_at, updated_at)
  SELECT (ARRAY['store-123','store-204','store-318','store-427','store-555'])[1 + g %% 5],
         CASE WHEN g %% 13 = 0 THEN 'escalated' WHEN g %% 31 = 0 THEN 'open' ELSE 'resolved' END,
         CASE WHEN g %% 13 = 0 OR g %% 31 = 0 THEN NULL WHEN g %% 17 = 0 THEN 'human'
              ELSE 'ai' END,
         now() - make_interval(secs => 3600 - g * 6), now() - make_interval(secs => 3600 - g * 6)
  FROM generate_series(1, 590) AS g
  RETURNING id, created_at)
INSERT INTO messages (conversation_id, role, intent, content, metadata, created_at)
SELECT c.id, r.role, i.intent, r.content,
       CASE WHEN r.role = 'assistant' AND c.id %% 300 = 7
            THEN jsonb_build_object('model', %(model)s::text,
                                    'error', 'application: upstream timeout')
            WHEN r.role = 'assistant' THEN jsonb_build_object('model', %(model)s::text,
                 'latency_ms', 700 + (c.id * 37) %% 900)
            ELSE '{}'::jsonb END,
       c.created_at + r.offset_s * interval '1 second'
FROM c
CROSS JOIN LATERAL (SELECT (ARRAY['order_status','refund_request','product_question',
       'shipping_info','complaint','other'])[1 + c.id %% 6] AS intent) i
CROSS JOIN (VALUES ('user', 'Where is my order?', 0), ('assistant', 'Let me check.', 1))
     AS r(role, content, offset_s)
"""


def hash_key(key: str) -> str:
    return store_keys.hash_key(key)


def store_ip(store: str) -> str:
    """A client address of the store's own servers: each store calls from its own few."""
    n = STORES.index(store) if store in STORES else len(STORES)
    return f"198.51.100.{10 * n + random.randint(1, 9)}"


async def prepare(url: str, primary_model: str) -> None:
    """Create the schema and seed an hour of history (idempotent per database)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(SCHEMA)  # type: ignore[arg-type]
        row = await (await conn.execute("SELECT count(*) FROM stores")).fetchone()
        if row and row[0]:
            return
        async with conn.transaction():
            for n, store in enumerate(STORES):
                await conn.execute(
                    "INSERT INTO stores (id, name, contact_email) VALUES (%s, %s, %s)",
                    (store, f"Store {n + 1}", store_keys.contact_for(store)),
                )
                await store_keys.insert_key(conn, store)  # the store keeps its copy; we forget it
            await conn.execute(SEED_HISTORY, {"model": primary_model})  # type: ignore[arg-type]
            await conn.execute(
                "INSERT INTO access_log (ts, store_id, key_prefix, ip, method, path, status)"
                " SELECT now() - make_interval(secs => g * 20), s.id, k.key_prefix,"
                " '203.0.113.' || mod(g, 50), 'POST', '/v1/chat', 200"
                " FROM generate_series(1, 180) g JOIN stores s ON s.id = %s"
                " JOIN store_api_keys k ON k.store_id = s.id",
                (STORES[0],),
            )


class TrafficWriter:
    """Writes simulated chats into `conversations`/`messages` in small batches."""

    def __init__(self, url: str) -> None:
        self.url = url
        # (outcome, store, when the chat happened): rows carry the chat's time, not the flush's,
        # so a chat decided just before a fix never shows up as "after the fix"
        self.pending: list[tuple[ChatOutcome, str, datetime]] = []
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def add(self, outcome: ChatOutcome, store: str | None = None) -> None:
        self.pending.append((outcome, store or random.choice(STORES), datetime.now(UTC)))

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name="sandbox-traffic"
            )
        async with self._conn.transaction(), self._conn.cursor() as cur:
            for outcome, store, at in batch:
                status, by = _conversation_outcome(outcome)
                await cur.execute(
                    "INSERT INTO conversations (store_id, status, resolved_by, created_at,"
                    " updated_at) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (store, status, by, at, at),
                )
                row = await cur.fetchone()
                assert row is not None
                meta: dict[str, Any] = {
                    "model": outcome.model,
                    "latency_ms": int(outcome.latency_s * 1000),
                }
                if outcome.error:
                    meta["error"] = outcome.error
                await cur.executemany(
                    "INSERT INTO messages (conversation_id, role, intent, content, metadata,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (row[0], "user", outcome.intent, "Hi, I need help", "{}", at),
                        (
                            row[0],
                            "assistant",
                            outcome.intent,
                            None if outcome.error else "Happy to help!",
                            json.dumps(meta),
                            at,
                        ),
                    ],
                )
            await cur.executemany(
                "INSERT INTO access_log (store_id, key_prefix, ip, method, path, status)"
                " SELECT %s, key_prefix, %s, 'POST', '/v1/chat', %s FROM store_api_keys"
                " WHERE store_id = %s AND revoked_at IS NULL AND disabled_at IS NULL"
                " ORDER BY id LIMIT 1",
                [(store, store_ip(store), 500 if o.error else 200, store) for o, store, _ in batch],
            )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


# a healthy platform's conversation outcomes (Key Metrics to Watch: automation ≥ 75 %,
# escalation ≤ 20 %): ~83 % resolved by the AI, ~8 % escalated, ~6 % resolved by a human who
# stepped in, ~3 % still open; every failed chat is escalated on top
ESCALATED, STILL_OPEN, HUMAN = 0.08, 0.11, 0.17


def _conversation_outcome(outcome: ChatOutcome) -> tuple[str, str | None]:
    """(status, resolved_by): failed chats escalate to a human; a few stay open."""
    roll = random.random()
    if outcome.error is not None or roll < ESCALATED:
        return "escalated", None
    if roll < STILL_OPEN:
        return "open", None
    return "resolved", "human" if roll < HUMAN else "ai"


class PoolHog:
    """`db-pool-exhausted`: checks out every connection of the API's pool and sits on them,
    idle in transaction, as a leaking request handler would."""

    def __init__(self) -> None:
        self.held: list[psycopg.AsyncConnection[Any]] = []
        self.pool: AsyncConnectionPool[Any] | None = None

    async def grab(self, pool: AsyncConnectionPool[Any], count: int) -> None:
        self.pool = pool
        for _ in range(count):
            try:
                conn = await pool.getconn(timeout=2)
            except Exception:
                break
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1 FROM conversations LIMIT 1")
            self.held.append(conn)

    async def release(self) -> None:
        held, self.held = self.held, []
        for conn in held:
            with contextlib.suppress(Exception):
                await conn.rollback()
            if self.pool is not None:
                with contextlib.suppress(Exception):
                    await self.pool.putconn(conn)


class SlowQueries:
    """`slow-queries`: real long-running statements from the API's role (pg_sleep)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tasks: list[asyncio.Task[None]] = []
        self.conns: list[psycopg.AsyncConnection[Any]] = []

    async def start(self, count: int = 3, seconds: int = 3600) -> None:
        for n in range(count):
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name="support-api"
            )
            self.conns.append(conn)
            sql = (
                "SELECT o.store_id, pg_sleep(%s) FROM (SELECT store_id FROM conversations"
                f" ORDER BY created_at DESC LIMIT 1) o /* report {n} */"
            )
            self.tasks.append(asyncio.create_task(self._run(conn, sql, seconds)))
        await asyncio.sleep(0.2)  # let the statements reach the server

    async def _run(self, conn: psycopg.AsyncConnection[Any], sql: str, seconds: int) -> None:
        with contextlib.suppress(Exception):
            await conn.execute(sql, (seconds,))  # type: ignore[arg-type]

    async def stop(self) -> None:
        conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.cancel_safe(timeout=2)
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 3)
        self.tasks = []
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()
        # a closed client does not stop pg_sleep on the server (it never checks the socket):
        # end any statement of ours a cancel missed, or it outlives the fault for an hour
        if conns:
            with contextlib.suppress(Exception):
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
                    await c.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND query LIKE '%%pg_sleep%%/* report %%'"
                    )
