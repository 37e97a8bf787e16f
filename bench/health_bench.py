"""Benchmark: the health flow runs its checks concurrently.

Every check gets an injected 200 ms delay: the API answers after 200 ms, and Postgres and Redis are
reached through loopback TCP proxies that wait 200 ms before connecting upstream. The health flow
then runs through a real local Prefect server. Target: flow check phase <= 1.3x the slowest check.

    .venv/bin/python -m bench.health_bench [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DELAY_S = 0.2


class _SlowHealth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(DELAY_S)
        body = b'{"status": "ok", "checks": {"database": "ok", "redis": "ok"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def _delay_proxy(upstream_port: int) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(DELAY_S)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _proxy_thread(upstream_port: int) -> int:
    ready: list[int] = []
    event = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        _, port = loop.run_until_complete(_delay_proxy(upstream_port))
        ready.append(port)
        event.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    event.wait(5)
    return ready[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    os.environ["PREFECT_HOME"] = str(home / "client")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from sandbox.local.prefect_server import LocalPrefectServer

    server = LocalPrefectServer(home / "server", ui=False)
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHealth)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    os.environ.update(
        {
            "PREFECT_API_URL": server.api_url,
            "RUNBOOK_API_URL": f"http://127.0.0.1:{http.server_address[1]}",
            "RUNBOOK_APP_DATABASE_URL": (
                f"postgresql://postgres@127.0.0.1:{_proxy_thread(5432)}/postgres"
            ),
            "RUNBOOK_APP_REDIS_URL": f"redis://127.0.0.1:{_proxy_thread(6379)}/0",
        }
    )
    try:
        from flows.health import collect_health, health_check, load_targets

        async def one_run() -> tuple[float, float, float, float, int, float]:
            targets = await load_targets()
            started = time.perf_counter()
            report = await collect_health(*targets, as_tasks=False)
            plain = time.perf_counter() - started
            started = time.perf_counter()
            flow_report = await health_check()
            flow_wall = time.perf_counter() - started
            slowest = max(c.duration_ms for c in flow_report.checks) / 1000
            serial = sum(c.duration_ms for c in flow_report.checks) / 1000
            assert all(c.duration_ms >= DELAY_S * 1000 for c in report.checks)
            phase = flow_report.elapsed_ms / 1000
            return plain, flow_wall, slowest, serial, len(flow_report.checks), phase

        asyncio.run(one_run())  # warm-up: imports, block lookups, first task registrations
        results = [asyncio.run(one_run()) for _ in range(args.runs)]
    finally:
        server.stop()
        http.shutdown()
    plain = statistics.median(r[0] for r in results)
    flow_wall = statistics.median(r[1] for r in results)
    slowest = statistics.median(r[2] for r in results)
    serial = statistics.median(r[3] for r in results)
    phase = statistics.median(r[5] for r in results)
    print(f"checks: {results[0][4]}, injected delay {DELAY_S * 1000:.0f} ms each, runs {args.runs}")
    print(f"slowest single check (median): {slowest * 1000:.0f} ms")
    print(f"serial sum of checks (median): {serial * 1000:.0f} ms")
    print(f"checks phase, plain functions: {plain * 1000:.0f} ms ({plain / slowest:.2f}x slowest)")
    print(
        f"checks phase as Prefect tasks in the flow: {phase * 1000:.0f} ms"
        f" ({phase / slowest:.2f}x slowest)"
    )
    print(
        f"whole flow run through Prefect: {flow_wall * 1000:.0f} ms"
        f" ({flow_wall / slowest:.2f}x slowest)"
    )


if __name__ == "__main__":
    main()
