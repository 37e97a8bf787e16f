"""Benchmark: the key-metrics watch is cheap — one SQL round trip per source, well under a
second a run, every minute.

The sandbox (its live traffic, ~8 chats a second) plus `--history-hours` of synthetic history
at the same rate in its app database (a day by default: ~0.7 M conversations, ~1.4 M messages),
an ops database of its own, and the flow run through a real local Prefect server. Measured per
run: the app-database round trip alone (`get_key_metrics`), Railway's two reads (concurrent),
the ops-database round trip (the sample), and the whole flow run.

    .venv/bin/python -m bench.metrics_watch [--runs 10] [--history-hours 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ADMIN_URL = os.environ.get("RUNBOOK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RATE = 8  # conversations a second, as the sandbox's traffic

HISTORY = """
WITH c AS (
  INSERT INTO conversations (store_id, status, resolved_by, created_at, updated_at)
  SELECT 'store-123',
         CASE WHEN g %% 13 = 0 THEN 'escalated' WHEN g %% 31 = 0 THEN 'open' ELSE 'resolved' END,
         CASE WHEN g %% 13 = 0 OR g %% 31 = 0 THEN NULL WHEN g %% 17 = 0 THEN 'human' ELSE 'ai' END,
         t, t
  FROM generate_series(1, %(n)s) AS g,
       LATERAL (SELECT now() - interval '1 hour'
                - make_interval(secs => g::float8 / %(rate)s)) AS x(t)
  RETURNING id, created_at)
INSERT INTO messages (conversation_id, role, intent, content, metadata, created_at)
SELECT c.id, r.role, 'order_status', 'x',
       CASE WHEN r.role = 'assistant'
            THEN jsonb_build_object('latency_ms', 700 + (c.id * 37) %% 900) ELSE '{}' END,
       c.created_at
FROM c CROSS JOIN (VALUES ('user'), ('assistant')) AS r(role)
"""


def _seed(url: str, hours: float) -> int:
    n = int(hours * 3600 * RATE)
    if n:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(HISTORY, {"n": n, "rate": RATE})  # type: ignore[arg-type]
            conn.execute("ANALYZE conversations")
            conn.execute("ANALYZE messages")
    return n


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--history-hours", type=float, default=24.0)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    os.environ["PREFECT_HOME"] = str(home / "client")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from sandbox.handle import start_sandbox
    from sandbox.local.prefect_server import LocalPrefectServer

    ops_name = f"runbook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{ops_name}"')  # type: ignore[arg-type]
    server = LocalPrefectServer(home / "server", ui=False)
    server.start()
    sandbox = start_sandbox(data_dir=home / "sandbox")
    try:
        os.environ.update({**sandbox.env, **sandbox.extra_env})
        os.environ["PREFECT_API_URL"] = server.api_url
        os.environ["RUNBOOK_OPS_DATABASE_URL"] = ADMIN_URL.rsplit("/", 1)[0] + "/" + ops_name
        started = time.perf_counter()
        seeded = _seed(sandbox.env["RUNBOOK_APP_DATABASE_URL"], args.history_hours)
        seed_s = time.perf_counter() - started

        from blocks import AppDatabase, Railway
        from flows.metrics_watch import metrics_watch
        from runbook import metric_samples, opsdb
        from runbook.plan import POOL_VARIABLE
        from tasks import app_metrics, railway

        async def one_run() -> tuple[float, float, float, float, float]:
            db, rw = await AppDatabase.resolve(), await Railway.resolve()
            t0 = time.perf_counter()
            await app_metrics.get_key_metrics.fn(db, 300)
            t1 = time.perf_counter()
            await asyncio.gather(
                railway.get_variable.fn(rw, POOL_VARIABLE), railway.get_service_instance.fn(rw)
            )
            t2 = time.perf_counter()
            async with await opsdb.connect() as conn:
                t3 = time.perf_counter()
                await metric_samples.record(conn, "bench", {"x": 1.0}, {"x": "ok"}, None)
                t4 = time.perf_counter()
            result = await metrics_watch()
            t5 = time.perf_counter()
            if result.act != "none":  # a breach also raises an alert: say so, still timed
                print(f"note: {result.act}: {result.why}")
            return t1 - t0, t2 - t1, t4 - t3, result.elapsed_ms / 1000, t5 - t4

        asyncio.run(one_run())  # warm-up: imports, block lookups, first task registrations
        results = [asyncio.run(one_run()) for _ in range(args.runs)]
    finally:
        sandbox.stop()
        server.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{ops_name}" WITH (FORCE)')  # type: ignore[arg-type]

    def show(label: str, i: int) -> None:
        values = [r[i] * 1000 for r in results]
        print(
            f"{label}: median {statistics.median(values):.1f} ms, p95 {_pct(values, 0.95):.1f} ms"
        )

    print(
        f"history: {seeded:,} conversations ({2 * seeded:,} messages) seeded in {seed_s:.0f} s,"
        f" plus the sandbox's live traffic; {args.runs} runs after a warm-up"
    )
    show("app database: one SQL round trip (5-min window)", 0)
    show("Railway: pool size + replicas (two reads, concurrent)", 1)
    show("ops database: one round trip (sample + previous)", 2)
    show("in-flow: measure, decide, record, artifact", 3)
    show("whole flow run through Prefect", 4)


if __name__ == "__main__":
    main()
