"""Intake throughput and ack latency, persist-before-ack, against a bare `return 202` baseline.

    .venv/bin/python bench/intake_bench.py [--seconds 10] [--connections 20] [--rate 1000]
                                           [--rounds 3] [--writers 2] [--dispatch]

What it does (stops by itself, about (2 x rounds + 1) x seconds plus start-up):
1. creates a throwaway ops database on the local PostgreSQL (RUNBOOK_BENCH_PG_URL, default
   postgresql://postgres@127.0.0.1:5432/postgres) and drops it at the end;
2. starts two servers on 127.0.0.1, each a single uvicorn process with the same options as
   `runbook intake`: the real intake (`intake.cli.run`, dispatcher off: nothing to dispatch to)
   and a bare Starlette app whose POST /alerts/{source} reads the body and returns 202;
3. drives each with a closed loop of N keep-alive connections for `seconds` (max throughput),
   alternating bare / intake for `rounds` pairs (the machine's drift hits both alike; the ratio
   is reported per pair and as the median),
   then drives the intake open-loop at a fixed `rate` for `seconds` (latency at the target load,
   measured from each request's scheduled send time, so queueing counts);
4. prints a markdown table: deliveries/s, p50/p99/max ack latency, statuses, and the ratio.

`--dispatch` (issue #15 item 4: the dedupe outcome from the same run): intake's dispatcher is on,
pointed at a local Prefect server (its embedded SQLite) holding a deployment of every alert flow
(no runner: the runs stay Scheduled), so the storm is taken while intake also starts the runs.
After the load it waits until every incident's dispatch is done and reports deliveries accepted,
incidents, flow runs, and flow runs per incident (target: exactly 1 each).

The load is a storm: signed generic and Alertmanager deliveries for 100 distinct problems, so most
deliveries coalesce into an open incident (one UPDATE + one INSERT in one transaction, committed
before the 202). The load generator is a raw asyncio HTTP/1.1 client on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intake import auth  # noqa: E402
from sandbox.local import process  # noqa: E402
from sandbox.local.prefect_server import free_port  # noqa: E402

SECRET = "bench-generic-secret"
TOKEN = "bench-alertmanager-token"

_BARE = """
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return Response(b'{"incident":null,"status":"new"}', 202, media_type="application/json")


app = Starlette(routes=[Route("/alerts/{source}", receive, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False,
            lifespan="on", timeout_graceful_shutdown=10, http="{http}", loop="{loop}")
"""


def build_requests(port: int, count: int, problems: int = 100) -> list[bytes]:
    """Pre-signed raw HTTP/1.1 requests (signing is the sender's cost, not intake's)."""
    now = int(time.time())
    requests = []
    for n in range(count):
        target = f"bench-{n % problems}"
        if n % 2:
            payload = {
                "version": "4",
                "status": "firing",
                "groupKey": f"{{}}:{{alertname=\"HighErrorRate\",target=\"{target}\"}}",
                "receiver": "runbook",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "HighErrorRate", "target": target,
                                   "severity": "critical", "environment": "production"},
                        "annotations": {"summary": "Error rate above 2% for 5 minutes"},
                        "startsAt": "2026-11-29T05:12:30Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": f"fp{n % problems}",
                    }
                ],
            }  # fmt: skip
            body = json.dumps(payload).encode()
            path, headers = "/alerts/alertmanager", {"Authorization": f"Bearer {TOKEN}"}
        else:
            payload = {
                "source": "bench",
                "name": "HighLatency",
                "severity": "critical",
                "summary": "P99 latency 12s",
                "dedup_key": target,
                "labels": {"target": target, "environment": "production"},
                "status": "firing",
            }
            body = json.dumps(payload).encode()
            path, headers = "/alerts/generic", auth.sign_generic(SECRET, body, now)
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return requests


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def row(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"| {self.name} | {len(self.latencies)} | {self.rate:,.0f} | {self.pct(0.5):.1f} |"
            f" {self.pct(0.99):.1f} | {max(self.latencies) * 1000:.1f} | {statuses} |"
        )


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def closed_loop(
    port: int, requests: list[bytes], connections: int, seconds: float, name: str
) -> Result:
    result = Result(name)
    counter = iter(range(10**9))
    start = time.perf_counter()
    stop_at = start + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop_at:
                status = await _exchange(reader, writer, requests[next(counter) % len(requests)])
                result.latencies.append(time.perf_counter() - now)
                result.statuses[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


async def open_loop(
    port: int, requests: list[bytes], rate: float, seconds: float, connections: int, name: str
) -> Result:
    """Requests scheduled at a fixed rate; latency counts from the scheduled time."""
    result = Result(name)
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                scheduled, request = item
                status = await _exchange(reader, writer, request)
                result.latencies.append(time.perf_counter() - scheduled)
                result.statuses[status] += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((scheduled, requests[n % len(requests)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    result.seconds = time.perf_counter() - start
    return result


def wait_ready(url: str, child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    try:
        process.wait_ready(child, _answers(url), name=url, timeout=timeout)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            httpx.post(url, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    return check


def stop(child: subprocess.Popen[bytes]) -> None:
    process.stop(child)


@dataclass
class Dedupe:
    """What a storm left: one incident per problem, one flow run per incident."""

    accepted: int = 0
    incidents: int = 0
    alerts_counted: int = 0
    runs_per_incident: Counter[int] = field(default_factory=Counter)
    dispatch_s: float = 0.0

    def lines(self) -> list[str]:
        runs = sum(k * v for k, v in self.runs_per_incident.items())
        exactly_one = self.runs_per_incident.get(1, 0)
        return [
            f"dedupe (same run): {self.accepted:,} deliveries accepted (202, warm-up included) →"
            f" {self.alerts_counted:,} alerts counted on {self.incidents} incidents →"
            f" {runs} flow runs;"
            f" incidents with exactly 1 run: {exactly_one}/{self.incidents}"
            f" (runs per incident: {dict(sorted(self.runs_per_incident.items()))});"
            f" every dispatch done {self.dispatch_s:.1f} s after the load",
            f"target 1 run per incident: {'met' if exactly_one == self.incidents else 'NOT met'};"
            f" every accepted delivery counted: {self.accepted == self.alerts_counted}",
        ]


ALERT_FLOWS = ("high-error-rate", "high-latency")  # the storm's two alert names route here


async def deploy_alert_flows(api_url: str) -> None:
    """A deployment of each alert flow the storm routes to, named as intake dispatches to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.registry import load_flow
    from runbook.settings import get_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        for name in ALERT_FLOWS:
            flow = load_flow(name)
            deployment = await flow.ato_deployment(name=get_settings().deployment_name)
            await deployment.aapply()


async def dedupe_outcome(db_url: str, api_url: str, accepted: int, timeout: float) -> Dedupe:
    """Waits until the outbox has no pending dispatch, then counts runs per incident."""
    from prefect.client.orchestration import PrefectClient

    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM runbook.outbox WHERE action = 'flow' AND done_at IS NULL"
            )
            pending = (await cur.fetchone() or (0,))[0]
            if not pending or time.perf_counter() - started > timeout:
                break
            await asyncio.sleep(0.2)
        dispatch_s = time.perf_counter() - started
        cur = await conn.execute("SELECT id::text, alert_count FROM runbook.incidents")
        incidents = {row[0]: row[1] for row in await cur.fetchall()}
    runs: Counter[str] = Counter()
    async with PrefectClient(api=api_url) as client:
        offset = 0
        while batch := await client.read_flow_runs(limit=200, offset=offset):
            runs.update(r.idempotency_key for r in batch if r.idempotency_key)
            offset += len(batch)
    return Dedupe(
        accepted=accepted,
        incidents=len(incidents),
        alerts_counted=sum(incidents.values()),
        runs_per_incident=Counter(runs.get(i, 0) for i in incidents),
        dispatch_s=dispatch_s,
    )


async def bench(args: argparse.Namespace, db_url: str) -> tuple[list[Result], Dedupe | None]:
    logs = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    intake_port, bare_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env.update(
        RUNBOOK_OPS_DATABASE_URL=db_url,
        RUNBOOK_GENERIC_SECRET=SECRET,
        RUNBOOK_ALERTMANAGER_TOKEN=TOKEN,
        RUNBOOK_INTAKE_DISPATCH="false",
        RUNBOOK_INTAKE_DB_POOL_SIZE=str(args.pool),
        RUNBOOK_INTAKE_PERSIST_WRITERS=str(args.writers),
        RUNBOOK_INTAKE_HTTP=args.http,
        RUNBOOK_INTAKE_LOOP=args.loop,
        PREFECT_API_URL="",
        PYTHONPATH=str(ROOT),
    )
    prefect = None
    if args.dispatch:
        from sandbox.local.prefect_server import LocalPrefectServer

        prefect = LocalPrefectServer(logs / "prefect", ui=False)
        prefect.start()
        await deploy_alert_flows(prefect.api_url)
        env.update(RUNBOOK_INTAKE_DISPATCH="true", **prefect.env())
    code = f"from intake.cli import run; run('127.0.0.1', {intake_port})"
    intake = process.spawn([sys.executable, "-c", code], env, logs / "intake.log")
    bare_code = (
        _BARE.replace("{port}", str(bare_port))
        .replace("{http}", args.http)
        .replace("{loop}", args.loop)
    )
    bare = process.spawn([sys.executable, "-c", bare_code], env, logs / "bare.log")
    try:
        wait_ready(f"http://127.0.0.1:{intake_port}/healthz", intake)
        wait_ready(f"http://127.0.0.1:{bare_port}/alerts/generic", bare)
        intake_requests = build_requests(intake_port, 20_000)
        bare_requests = build_requests(bare_port, 2_000)
        c, s = args.connections, args.seconds
        warm = await closed_loop(intake_port, intake_requests, c, 2, "warm-up")  # opens them
        await closed_loop(bare_port, bare_requests, c, 1, "warm-up")
        results = []
        for n in range(1, args.rounds + 1):  # alternate, so drift in the machine hits both
            results.append(await closed_loop(bare_port, bare_requests, c, s, f"bare #{n}"))
            results.append(await closed_loop(intake_port, intake_requests, c, s, f"intake #{n}"))
        fixed = await open_loop(
            intake_port, intake_requests, args.rate, s, max(c, 50),
            f"intake at {args.rate:,.0f}/s (open loop)",
        )  # fmt: skip
        dedupe = None
        if prefect is not None:
            accepted = warm.statuses[202] + sum(
                r.statuses[202] for r in [*results, fixed] if r.name.startswith("intake")
            )
            dedupe = await dedupe_outcome(db_url, prefect.api_url, accepted, timeout=120)
        return [*results, fixed], dedupe
    finally:
        stop(intake)
        stop(bare)
        if prefect is not None:
            prefect.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--pool", type=int, default=10, help="intake's ops DB pool size")
    parser.add_argument("--writers", type=int, default=2, help="intake's group-commit writers")
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare/intake closed-loop pairs, alternating"
    )
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="intake also dispatches to a local Prefect server; report runs per incident",
    )
    args = parser.parse_args()

    admin = os.environ.get("RUNBOOK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"runbook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        results, dedupe = asyncio.run(bench(args, admin.rsplit("/", 1)[0] + "/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    *pairs, fixed = results
    bares, intakes = pairs[0::2], pairs[1::2]
    ratios = sorted(i.rate / b.rate for b, i in zip(bares, intakes, strict=True))
    median_bare = sorted(b.rate for b in bares)[len(bares) // 2]
    median_intake = sorted(i.rate for i in intakes)[len(intakes) // 2]
    stack = f"uvicorn http={args.http} loop={args.loop}"
    if args.http == "auto" or args.loop == "auto":
        have = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
        stack += f" (installed: {', '.join(have) or 'neither uvloop nor httptools'})"
    print(f"{os.cpu_count()} CPUs, {args.connections} connections, {args.seconds:g} s per run")
    print(f"server stack: {stack}\n")
    print("| run | deliveries | per second | p50 ms | p99 ms | max ms | statuses |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    print(
        f"\nmedian bare {median_bare:,.0f}/s, median intake {median_intake:,.0f}/s;"
        f" intake / bare per round: {', '.join(f'{r:.0%}' for r in ratios)};"
        f" median {ratios[len(ratios) // 2]:.0%}"
    )
    print(
        f"target ≥ 1,000/s for {args.seconds:g} s with p99 ≤ 100 ms:"
        f" {'met' if fixed.rate >= 990 and fixed.pct(0.99) <= 100 else 'NOT met'}"
        f" ({fixed.rate:,.0f}/s, p99 {fixed.pct(0.99):.1f} ms)"
    )
    for line in dedupe.lines() if dedupe else []:
        print(line)


if __name__ == "__main__":
    main()
