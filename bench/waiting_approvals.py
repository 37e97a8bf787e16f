"""Benchmark: 100 waiting approvals (issue #15).

One local stack, as `runbook demo` starts it (`sandbox.local.stack.Stack`), with a short approval
timeout (`--approval-timeout`, 180 s: `RUNBOOK_APPROVAL_TIMEOUT_S` of the stack's processes; it
must exceed the time every run needs to reach its approval, or the first ones expire before the
last ones wait, and fewer than all wait at once — the report shows the peak). Then
`--incidents` (100) runs of a served deployment are started at once with `run_deployment`
(`timeout=0`, `--parallel` creations at a time), each with its own incident id:

- `--flow high-error-rate` (default): the sandbox's `bad-deploy` fault is injected first (and
  kept); each run observes, decides `rollback` (destructive: approval), records its approval,
  sends the one-time codes and **suspends** (its process exits);
- `--flow rollback`: an operator's "Immediate rollback" (no fault needed) — today its runs fail
  parameter validation under `runbook serve`'s warm start (see docs), so it is not the default.

Nobody answers: at each approval's expiry the approval sweeper (inside `runbook serve`) resumes
the run with its "timed out" answer; the run reruns, records `timed_out`, pages and completes
"not approved".

Sampled every `--sample` s throughout:

- runs Prefect shows Suspended and approval rows `waiting` (the peak of both at once);
- processes held: the children and grandchildren of `runbook serve` that are flow runs — the
  forkserver helper (and multiprocessing's resource tracker) are counted separately;
- RSS (MiB) of `runbook serve` (the approval sweeper runs in it) + its forkserver helper (and
  resource tracker) + the flow-run processes, and of the intake (target: < 1 GiB in all).

At the end, per approval: expires_at → the sweeper's resume (`swept_at`), → the `timed_out` row
(`decided_at`, written by the rerun), → the run's terminal state (Prefect's timestamp); max and
p95 of each lag, and whether every approval was timed out and every run completed.

    .venv/bin/python -m bench.waiting_approvals [--incidents 100] [--approval-timeout 180]

Every process it started is stopped at the end (`Stack.stop()`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alert_to_action import (  # noqa: E402
    _pct,
    _sigterm,
    _ts,
    add_prefect_db_option,
    wait_for_quiet,
)
from sandbox.local.stack import Stack  # noqa: E402

RSS_TARGET_MIB = 1024.0
# the served deployment each incident runs: high-error-rate with the sandbox's bad deploy (it
# decides `rollback`, destructive: approval); or `rollback`, an operator's "Immediate rollback"
# (no fault needed) — see the report: on `runbook serve`'s warm start its parameters fail
# validation today, as for every flow whose parameters are annotated with module-level types
SERVED = ("high-error-rate", "rollback")


@dataclass
class Sample:
    at: float
    suspended: int = 0
    waiting_rows: int = 0
    final: int = 0
    run_procs: int = 0
    helpers: int = 0
    rss_serve: float = 0.0  # serve + helpers (MiB)
    rss_runs: float = 0.0  # flow-run processes (MiB)
    rss_intake: float = 0.0
    zombies: int = 0
    pss_total: float = 0.0

    @property
    def rss_total(self) -> float:
        return self.rss_serve + self.rss_runs + self.rss_intake


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    started_s: float = 0.0  # all run_deployment calls returned
    refused: int = 0  # creations the Prefect server refused (retried)
    sample_errors: int = 0
    all_suspended_s: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    finals: dict[str, tuple[str, float]] = field(default_factory=dict)  # run → (state, ts)


def _mib(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _pss_mib(pids: list[int]) -> float:
    """Proportional set size: pages a forked child shares with the forkserver counted once
    (RSS counts them in every process)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error, AttributeError):
            total += float(psutil.Process(pid).memory_full_info().pss) / 2**20
    return total


def processes(serve_pid: int, intake_pid: int) -> tuple[int, int, float, float, float, int, float]:
    """(flow-run processes, helper processes, serve+helpers MiB, runs MiB, intake MiB, zombies,
    PSS of them all MiB).

    Helpers: `runbook serve`'s direct children that are multiprocessing's forkserver or resource
    tracker. A forked flow run carries the forkserver's command line (fork keeps argv), so runs
    are told apart by parentage: every other descendant of serve is a flow-run process."""
    try:
        serve = psutil.Process(serve_pid)
        direct = {c.pid for c in serve.children()}
        below = serve.children(recursive=True)
    except psutil.Error:
        return 0, 0, 0.0, 0.0, 0.0, 0, 0.0
    runs = helpers = zombies = 0
    rss_serve, rss_runs = _mib(serve), 0.0
    counted = [serve_pid, intake_pid]
    for child in below:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies += 1
                continue
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        counted.append(child.pid)
        if child.pid in direct and ("forkserver" in cmd or "resource_tracker" in cmd):
            helpers += 1
            rss_serve += _mib(child)
        else:
            runs += 1
            rss_runs += _mib(child)
    try:
        rss_intake = _mib(psutil.Process(intake_pid))
    except psutil.Error:
        rss_intake = 0.0
    return runs, helpers, rss_serve, rss_runs, rss_intake, zombies, _pss_mib(counted)


async def _rows(run_ids: list[str]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    from runbook import opsdb

    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT flow_run_id, status, expires_at, swept_at, decided_at, requested_at"
            " FROM runbook.approvals WHERE flow_run_id = ANY(%s)",
            (run_ids,),
        )
        return list(await cur.fetchall())


async def _states(prefect: Any, run_ids: list[str]) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[str, Any] = {}
    ids = [uuid.UUID(r) for r in run_ids]
    for i in range(0, len(ids), 200):
        runs = await prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 200])), limit=200
        )
        found.update({str(r.id): r for r in runs})
    return found


async def start_runs(flow: str, n: int, tag: str, parallel: int) -> tuple[list[str], int]:
    """`n` runs of the deployment, `parallel` creations at a time; a creation the server
    refuses (the embedded SQLite server answers 503 "database is locked" under load) is tried
    again, up to 5 times. Returns (run ids, refusals)."""
    from prefect.deployments import run_deployment

    from runbook.settings import get_settings

    name = f"{flow}/{get_settings().deployment_name}"
    gate = asyncio.Semaphore(parallel)
    refused = 0

    async def one(i: int) -> str:
        nonlocal refused
        for attempt in range(5):
            try:
                async with gate:
                    run = await run_deployment(  # type: ignore[misc]
                        name, parameters={"incident_id": f"bench-wait-{tag}-{i:03d}"}, timeout=0
                    )
                return str(run.id)
            except Exception as exc:
                refused += 1
                print(f"  run {i}: creation refused ({type(exc).__name__}), retrying", flush=True)
                if attempt == 4:
                    raise
                await asyncio.sleep(2)
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(i) for i in range(n)))), refused


async def bench(stack: Stack, args: Any) -> Outcome:
    from prefect.client.orchestration import get_client

    serve_pid, intake_pid = stack.children[1].pid, stack.children[0].pid
    out = Outcome()
    if args.flow == "high-error-rate":  # the symptom it rolls back for, kept for the whole run
        from bench.approval_to_act import wait_symptom

        stack.sandbox.reset()
        stack.sandbox.inject("bad-deploy")
        print(f"bad deploy visible to the flow after {await wait_symptom():.1f} s", flush=True)
    t0 = time.monotonic()
    out.runs, out.refused = await start_runs(
        args.flow, args.incidents, uuid.uuid4().hex[:6], args.parallel
    )
    out.started_s = time.monotonic() - t0
    print(f"{len(out.runs)} runs of {args.flow} started in {out.started_s:.1f} s", flush=True)
    deadline = time.monotonic() + args.approval_timeout + args.max_wait
    last_said = 0.0
    async with get_client() as prefect:
        while True:
            try:
                runs = await _states(prefect, out.runs)
                rows = await _rows(out.runs)
            except Exception as exc:  # the server refused a read: skip this sample
                out.sample_errors += 1
                print(f"  sample failed: {type(exc).__name__}", flush=True)
                await asyncio.sleep(args.sample)
                continue
            procs = await asyncio.to_thread(processes, serve_pid, intake_pid)
            s = Sample(
                at=time.monotonic() - t0,
                suspended=sum(1 for r in runs.values() if r.state and r.state.is_paused()),
                waiting_rows=sum(1 for r in rows if r["status"] == "waiting"),
                final=sum(1 for r in runs.values() if r.state and r.state.is_final()),
                run_procs=procs[0],
                helpers=procs[1],
                rss_serve=procs[2],
                rss_runs=procs[3],
                rss_intake=procs[4],
                zombies=procs[5],
                pss_total=procs[6],
            )
            out.samples.append(s)
            if out.all_suspended_s is None and s.suspended == len(out.runs):
                out.all_suspended_s = s.at
                print(f"all {s.suspended} suspended after {s.at:.1f} s", flush=True)
            if time.monotonic() - last_said > 10:
                last_said = time.monotonic()
                print(
                    f"  t={s.at:6.1f} s suspended {s.suspended:3d} waiting rows"
                    f" {s.waiting_rows:3d} final {s.final:3d} run processes {s.run_procs:2d}"
                    f" helpers {s.helpers} RSS serve+helpers {s.rss_serve:.0f} runs"
                    f" {s.rss_runs:.0f} intake {s.rss_intake:.0f} MiB (PSS all"
                    f" {s.pss_total:.0f}), zombies {s.zombies}, load"
                    f" {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            if s.final == len(out.runs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(args.sample)
        out.rows = await _rows(out.runs)
        states = await _states(prefect, out.runs)
        for run_id, run in states.items():
            if run.state is not None and run.state.is_final() and run.state.timestamp:
                out.finals[run_id] = (run.state.name or "?", _ts(run.state.timestamp))
    return out


def report(out: Outcome, args: Any, loads: list[float]) -> None:
    n = len(out.runs)
    peak = max(out.samples, key=lambda s: (s.suspended, s.waiting_rows))
    both = max(min(s.suspended, s.waiting_rows) for s in out.samples)
    proc_max = max(s.run_procs for s in out.samples)
    proc_at_peak = peak.run_procs
    helpers = max(s.helpers for s in out.samples)
    zombies = max(s.zombies for s in out.samples)
    rss_peak = max(out.samples, key=lambda s: s.rss_total)
    # waiting phase with every run suspended (no run process alive)
    idle = [s for s in out.samples if s.suspended == n]
    rss_idle = max((s.rss_total for s in idle), default=float("nan"))

    timed_out = [r for r in out.rows if r["status"] == "timed_out"]
    by_run = {str(r["flow_run_id"]): r for r in out.rows}
    swept = [(r["swept_at"] - r["expires_at"]).total_seconds() for r in out.rows if r["swept_at"]]
    decided = [
        (r["decided_at"] - r["expires_at"]).total_seconds() for r in timed_out if r["decided_at"]
    ]
    final_lag = [
        ts - by_run[run]["expires_at"].timestamp()
        for run, (_, ts) in out.finals.items()
        if run in by_run
    ]
    completed = sum(1 for name, _ in out.finals.values() if name == "Completed")

    def lag(label: str, values: list[float]) -> str:
        if not values:
            return f"{label}: -"
        return (
            f"{label}: median {statistics.median(values):.1f} s, p95 {_pct(values, 0.95):.1f} s,"
            f" max {max(values):.1f} s (n={len(values)})"
        )

    print(f"\n{n} runs; approval timeout {args.approval_timeout} s")
    print(
        f"run_deployment x {n}: {out.started_s:.1f} s; all suspended after "
        + (f"{out.all_suspended_s:.1f} s" if out.all_suspended_s is not None else "never")
    )
    print(
        f"peak: {peak.suspended} Suspended in Prefect, {peak.waiting_rows} approval rows waiting"
        f" (both at once: {both}) at t={peak.at:.1f} s"
    )
    print(
        f"flow-run processes: {proc_at_peak} at the peak, max {proc_max} at any time"
        f" (runner limit); helper processes (forkserver, resource tracker): {helpers};"
        f" zombie (unreaped) children, max: {zombies}"
    )
    print(
        f"RSS total (serve + helpers + run processes + intake): max {rss_peak.rss_total:.0f} MiB"
        f" at t={rss_peak.at:.0f} s (serve+helpers {rss_peak.rss_serve:.0f}, runs"
        f" {rss_peak.rss_runs:.0f}, intake {rss_peak.rss_intake:.0f}); with all {n} suspended:"
        f" {rss_idle:.0f} MiB"
    )
    print(lag("expires_at → sweeper resumed it (swept_at)", swept))
    print(lag("expires_at → timed_out row (decided_at, by the rerun)", decided))
    print(lag("expires_at → run terminal state", final_lag))
    print(
        f"timed out: {len(timed_out)}/{n}; runs Completed: {completed}/{n};"
        f" final states: {sorted({name for name, _ in out.finals.values()})}"
    )
    print(f"1-min load: {min(loads):.2f} to {max(loads):.2f}")

    met_rss = rss_peak.rss_total < RSS_TARGET_MIB
    today = datetime.now(UTC).date().isoformat()
    print("\nmarkdown rows for docs/benchmarks.md:\n")
    print("| figure | value |\n|---|---|")
    print(f"| runs started (`run_deployment` x {n}) | {out.started_s:.1f} s |")
    print(
        f"| all {n} suspended (waiting) after | "
        + (f"{out.all_suspended_s:.1f} s |" if out.all_suspended_s is not None else "never |")
    )
    print(
        f"| peak waiting at once (Suspended in Prefect / approval rows waiting) |"
        f" {peak.suspended} / {peak.waiting_rows} |"
    )
    held = [s.run_procs for s in idle]
    print(
        f"| flow-run processes while all {n} are suspended: min / max over"
        f" {len(held)} samples (a run finishing its pass or a rerun starting counts) |"
        f" {min(held, default=proc_at_peak)} / {max(held, default=proc_at_peak)} |"
    )
    print(f"| flow-run processes at any time, max (runner limit) | {proc_max} |")
    print(f"| helper processes of `runbook serve` (forkserver, resource tracker) | {helpers} |")
    print(f"| zombie (unreaped) children of serve / its forkserver, max | {zombies} |")
    print(
        f"| **RSS serve + helpers + runs + intake, max** (target < 1 GiB) |"
        f" **{rss_peak.rss_total:.0f} MiB** ({'met' if met_rss else 'NOT met'}) |"
    )
    print(f"| RSS with all {n} suspended | {rss_idle:.0f} MiB |")
    pss_peak = max(s.pss_total for s in out.samples)
    print(f"| PSS of the same processes, max (shared pages counted once) | {pss_peak:.0f} MiB |")
    for label, values in (
        ("expires_at → sweeper's resume", swept),
        ("expires_at → `timed_out` row", decided),
        ("expires_at → run terminal state", final_lag),
    ):
        if values:
            print(f"| {label}: p95 / max | {_pct(values, 0.95):.1f} s / {max(values):.1f} s |")
    print(f"| approvals timed out / runs Completed | {len(timed_out)}/{n} / {completed}/{n} |")
    print(
        f"| Prefect server refusals (503) while creating runs / failed samples |"
        f" {out.refused} / {out.sample_errors} |"
    )
    print(f"| measured | {today}, 2 cores, 1-min load {statistics.median(loads):.1f} |")


def start_stack(stack: Stack, attempts: int = 3) -> None:
    """`stack.start()`, again after a failed start (on a busy machine the Prefect server can
    miss its 60 s readiness window); every process of a failed attempt is stopped first."""
    for attempt in range(1, attempts + 1):
        try:
            stack.start(say=lambda m: print(m, flush=True))
            return
        except RuntimeError as exc:
            if attempt == attempts:
                raise
            print(f"stack start failed ({exc}); stopping it and trying again", flush=True)
            stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=100, help="runs waiting at once")
    parser.add_argument("--flow", choices=SERVED, default=SERVED[0], help="the deployment run")
    parser.add_argument(
        "--approval-timeout",
        type=int,
        default=180,
        help="s (the stack's): longer than it takes every run to reach its approval",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=900.0,
        help="s after the timeout to wait for every run to end",
    )
    parser.add_argument("--sample", type=float, default=1.0, help="s between samples")
    parser.add_argument("--parallel", type=int, default=10, help="run creations at a time")
    parser.add_argument("--max-load", type=float, default=1.5, help="1-min load to wait for")
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="s to wait for it, max")
    add_prefect_db_option(parser)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)

    from flows.registry import FLOWS
    from runbook.settings import get_settings

    wait_for_quiet(args.max_load, time.monotonic() + args.quiet_wait)
    os.environ.update(
        {
            "RUNBOOK_APPROVAL_TIMEOUT_S": str(args.approval_timeout),
            "RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR": "100",
        }
    )
    home = Path(tempfile.mkdtemp(prefix="runbook-bench-wait-"))
    stack = Stack(
        home, flows=len(FLOWS), ui=False, prefect_on_postgres=args.prefect_db == "postgres"
    )
    out: Outcome | None = None
    loads = [os.getloadavg()[0]]
    try:
        t0 = time.monotonic()
        start_stack(stack)
        print(f"stack up in {time.monotonic() - t0:.0f} s ({home})", flush=True)
        get_settings.cache_clear()
        assert stack.server is not None
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}):
            out = asyncio.run(bench(stack, args))
        loads.append(os.getloadavg()[0])
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    finally:
        print("stopping every process the benchmark started …", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if out is None or not out.samples:
        return 1
    loads += [os.getloadavg()[0]]
    report(out, args, loads)
    ok = len(out.finals) == len(out.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
