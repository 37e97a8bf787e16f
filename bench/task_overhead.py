"""Benchmark: what wrapping one of our real tasks in a Prefect task run costs (issue #15).

Four real tasks against the sandbox, each timed N times called directly (the task's underlying
function, `task.fn`: no Prefect) and N times as a Prefect task run inside one flow run, against a
real local Prefect server (`sandbox.local.prefect_server.LocalPrefectServer`, embedded SQLite):

- `railway.get_service_instance` — one Railway GraphQL read (sandbox Railway);
- `postgres.get_pg_connections`  — one `pg_stat_activity` check of the app database;
- `redis.get_redis_ping`         — one Redis PING;
- `notify.send_slack`            — one Slack webhook post (sandbox Slack sink).

Inside the flow the calls are sequential and interleaved with direct calls of the same function
in the same event loop (direct, task, direct, task, …), so both see the same machine load.
Reported per task: ms per call (median, p95) both ways, and the overhead (task - direct).

    .venv/bin/python -m bench.task_overhead [--n 200] [--warmup 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("RUNBOOK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NAMES = (
    "railway.get_service_instance",
    "postgres.get_pg_connections",
    "redis.get_redis_ping",
    "notify.send_slack",
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _calls() -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """name → (the task object, its arguments): blocks resolved once, outside the timing."""
    from blocks import AppDatabase, AppRedis, Railway
    from blocks.policy import Policy
    from blocks.slack import Slack
    from tasks import notify, postgres, railway, redis

    db, cache, rw, policy, slack = await asyncio.gather(
        AppDatabase.resolve(),
        AppRedis.resolve(),
        Railway.resolve(),
        Policy.resolve(),
        Slack.resolve(),
    )
    return {
        "railway.get_service_instance": (railway.get_service_instance, (rw,)),
        "postgres.get_pg_connections": (postgres.get_pg_connections, (db, policy)),
        "redis.get_redis_ping": (redis.get_redis_ping, (cache,)),
        "notify.send_slack": (notify.send_slack, (slack, "bench: task overhead")),
    }


async def _timed(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> float:
    t0 = time.perf_counter()
    await fn(*args)
    return time.perf_counter() - t0


def build_flow(n: int, warmup: int) -> Any:
    from prefect import flow
    from prefect.cache_policies import NO_CACHE

    @flow(name="bench-task-overhead", log_prints=False, persist_result=False)
    async def bench_task_overhead() -> dict[str, dict[str, list[float]]]:
        calls = await _calls()
        out: dict[str, dict[str, list[float]]] = {}
        for name, (task_obj, args) in calls.items():
            # the same task without its cache key (Prefect's default policy hashes the inputs
            # and the task's source on every call): shows what that part costs
            no_cache = task_obj.with_options(cache_policy=NO_CACHE)
            times: dict[str, list[float]] = {"direct": [], "task": [], "no_cache": []}
            for i in range(warmup + n):
                d = await _timed(task_obj.fn, args)
                w = await _timed(task_obj, args)
                c = await _timed(no_cache, args)
                if i >= warmup:
                    times["direct"].append(d)
                    times["task"].append(w)
                    times["no_cache"].append(c)
            out[name] = times
        return out

    return bench_task_overhead


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200, help="calls per task, each way")
    parser.add_argument("--warmup", type=int, default=5, help="calls each way first, not counted")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="runbook-bench-tasks-"))
    os.environ["PREFECT_HOME"] = str(home / "client")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from sandbox.handle import start_sandbox
    from sandbox.local.prefect_server import LocalPrefectServer

    ops_name = f"runbook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{ops_name}"')  # type: ignore[arg-type]
    server = LocalPrefectServer(home / "server", ui=False)
    sandbox = None
    loads: list[float] = [os.getloadavg()[0]]
    try:
        server.start()
        sandbox = start_sandbox(data_dir=home / "sandbox")
        os.environ.update({**sandbox.env, **sandbox.extra_env})
        os.environ["PREFECT_API_URL"] = server.api_url
        os.environ["RUNBOOK_OPS_DATABASE_URL"] = ADMIN_URL.rsplit("/", 1)[0] + "/" + ops_name
        from runbook.settings import get_settings

        get_settings.cache_clear()
        bench = build_flow(args.n, args.warmup)
        t0 = time.perf_counter()
        results = asyncio.run(bench())
        took = time.perf_counter() - t0
        loads.append(os.getloadavg()[0])
    finally:
        if sandbox is not None:
            sandbox.stop()
        server.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{ops_name}" WITH (FORCE)')  # type: ignore[arg-type]

    print(
        f"\n{args.n} calls per task each way (after {args.warmup} warm-up), one flow run,"
        f" {took:.0f} s; 1-min load {loads[0]:.2f} before, {loads[-1]:.2f} after"
    )
    today = datetime.now(UTC).date().isoformat()
    print("\nmarkdown rows for docs/benchmarks.md:\n")
    print(
        "| task | direct (`.fn`) median | p95 | as a Prefect task median | p95 |"
        " overhead median | overhead p95 | task, `cache_policy=NO_CACHE`: median (overhead) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    overheads: list[float] = []
    for name in NAMES:
        direct = [x * 1000 for x in results[name]["direct"]]
        task = [x * 1000 for x in results[name]["task"]]
        no_cache = [x * 1000 for x in results[name]["no_cache"]]
        over = statistics.median(task) - statistics.median(direct)
        over_nc = statistics.median(no_cache) - statistics.median(direct)
        overheads.append(over)
        print(
            f"| `{name}` | {statistics.median(direct):.2f} ms | {_pct(direct, 0.95):.2f} ms"
            f" | {statistics.median(task):.2f} ms | {_pct(task, 0.95):.2f} ms"
            f" | +{over:.2f} ms | {_pct(task, 0.95) - _pct(direct, 0.95):+.2f} ms"
            f" | {statistics.median(no_cache):.2f} ms (+{over_nc:.2f} ms) |"
        )
    print(
        f"\nper-task overhead (median of the four medians): {statistics.median(overheads):.2f} ms"
        f"  — measured {today}, 2 cores, 1-min load {max(loads):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
