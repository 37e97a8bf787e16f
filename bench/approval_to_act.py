"""Benchmark: approval answered → act (issue #15).

One local stack, as `runbook demo` starts it (`sandbox.local.stack.Stack`: Prefect server, the
sandbox, an ops database, the intake, `runbook serve` with every flow and its warm (forked)
start, runs started on Prefect's events, the runner's poll every 1 s as the fallback). Then,
per run:

1. reset the sandbox, inject `bad-deploy`, poll until the high-error-rate flow's own `observe` +
   `decide` (plain function calls) would roll back (not counted);
2. post a real `HighErrorRate` Alertmanager delivery with a fresh fingerprint; the intake opens
   an incident and starts the high-error-rate flow, which decides `rollback`, records the
   approval, sends the one-time codes and **suspends** (its process exits);
3. once Prefect shows the run Suspended and `--answer-after` (2 s, a human's delay, not counted)
   has passed, answer as `oncall` with the code from the sandbox's Slack sink, through
   Prefect's resume API — what `runbook demo --auto-approve` (`_approve`),
   `runbook approve` and the UI's Resume form do;
4. time from just before the resume call to the rollback mutation (`deploymentRollback`) in the
   sandbox journal, by the entry's own timestamp. The rerun does what it does in production:
   reruns the flow from the top (observes and decides again), reads the stored answer, re-checks
   the symptom after the approval (`still_needed`), takes the ledger lock and the per-target
   concurrency slot, then calls Railway;
5. wait for the run to end (verify included), check the rollback happened exactly once (one
   journal entry, one `done` ledger row), resolve the alert.

Breakdown (consecutive, from Prefect's state timestamps and the incident timeline): resume call →
the run Scheduled again (the API), → Pending (the runner's poll), → Running (the forked run
process is up), → the rerun's first timeline event (`resumed`), → `decided` (observe + decide
again), → `approved` (the stored answer checked), → the mutation (re-check, lock, slot, Railway).

    .venv/bin/python -m bench.approval_to_act [--runs 30] [--warmup 2] [--max-load 1.5]

Target: ≤ 1 s (median), printed, never asserted. Every process it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alert_to_action import (  # noqa: E402
    _ops,
    _pct,
    _sigterm,
    _ts,
    _uuid,
    _wait_final,
    add_prefect_db_option,
    wait_for_quiet,
)
from runbook.cli.demo import SCENARIOS, _code, alertmanager_payload  # noqa: E402
from sandbox.local.stack import Stack  # noqa: E402

TARGET_S = 1.0
ACT_OPERATION = "deploymentRollback"
APPROVER = "oncall"
STAGES = (
    ("api", "resume call → run Scheduled again (Prefect API)"),
    ("pickup", "Scheduled → Pending (event-driven pickup)"),
    ("launch", "Pending → Running (forked run process)"),
    ("boot", "Running → rerun's first timeline event (`resumed`)"),
    ("diagnose", "`resumed` → `decided` (observe + decide again)"),
    ("answer", "`decided` → `approved` (stored answer checked)"),
    ("act", "`approved` → mutation (re-check, lock, slot, Railway)"),
)
# the environment of the stack this benchmark starts: a rollback per run needs a destructive
# budget above the production 2 an hour (as `runbook demo`'s game day sets it)
BENCH_ENV = {"RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR": "100"}


@dataclass
class Result:
    fault_wait_s: float = 0.0
    to_suspended_s: float = 0.0  # alert POST → Suspended (not counted)
    to_act_s: float | None = None
    acts: int = 0
    ledger_done: int = 0
    final_state: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    problem: str = ""
    events: list[str] = field(default_factory=list)

    @property
    def once(self) -> bool:
        return self.acts == 1 and self.ledger_done == 1

    @property
    def ok(self) -> bool:
        return self.to_act_s is not None and self.once and not self.problem


# -- the symptom, as the flow will judge it --------------------------------------------------------
_BLOCKS: dict[str, Any] = {}


async def flow_would_roll_back() -> str:
    """The high-error-rate flow's own `observe` + `decide` (its tasks as plain task runs)."""
    from blocks import AppDatabase, LangSmith, Railway, StatusPages
    from blocks.policy import Policy
    from flows.high_error_rate import decide, observe

    if not _BLOCKS:
        found = await asyncio.gather(
            AppDatabase.resolve(),
            LangSmith.resolve(),
            Railway.resolve(),
            StatusPages.resolve(),
            Policy.resolve(),
        )
        _BLOCKS.update(zip(("db", "ls", "rw", "pages", "policy"), found, strict=True))
    b = _BLOCKS
    policy = b["policy"]
    signals, _ = await observe(b["db"], b["ls"], b["rw"], b["pages"], policy)
    decision = decide(signals, policy)
    verdict = f"{decision.cause} → {decision.act}" + ("" if decision.spec else " (no spec)")
    # a margin over the thresholds, so the run a moment later does not see the 5-min rate a
    # hair below them and escalate instead (the rate climbs for minutes after a reset)
    floor = 1.15 * max(policy.rollback_error_rate_pct, policy.threshold("error_rate_pct").warn)
    if min(signals.rate_5m_pct, signals.rate_recent_pct) < floor:
        verdict += f" (rates {signals.rate_5m_pct} / {signals.rate_recent_pct} % below {floor:.1f})"
    return verdict


async def wait_symptom(timeout_s: float = 120.0) -> float:
    started = time.monotonic()
    while (verdict := await flow_would_roll_back()) != "bad-deploy → rollback":
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the flow would not roll back within {timeout_s:g} s ({verdict})")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def _events_since(incident: str) -> list[dict[str, Any]]:
    return (await _ops(incident))[1]


async def wait_suspended(prefect: Any, run_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = await prefect.read_flow_run(uuid.UUID(run_id))
        if run.state is not None and run.state.is_paused():
            return run
        if run.state is not None and run.state.is_final():
            raise TimeoutError(f"run {run_id} ended {run.state.name} before asking for approval")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"run {run_id} not suspended within {timeout_s:g} s")


# -- one run ---------------------------------------------------------------------------------------
async def one_run(
    stack: Stack, http: httpx.AsyncClient, prefect: Any, answer_after_s: float = 2.0
) -> Result:
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus

    scenario = next(s for s in SCENARIOS if s.name == "bad-deploy")
    sb = stack.sandbox
    result = Result()
    sb.reset()
    before = len(sb.journal())
    sb.inject("bad-deploy")
    result.fault_wait_s = await wait_symptom()

    started, fingerprint = datetime.now(UTC), uuid.uuid4().hex[:16]
    headers = {"Authorization": f"Bearer {stack.alert_token}"}
    posted = time.monotonic()
    answer = await http.post(
        f"{stack.intake_url}/alerts/alertmanager",
        json=alertmanager_payload(scenario, "firing", started, fingerprint),
        headers=headers,
    )
    incident = str(answer.json().get("incident") or "")
    if answer.status_code != 202 or not incident:
        result.problem = f"intake answered {answer.status_code}: {answer.text[:200]}"
        return result
    try:
        deadline, run_id = time.monotonic() + 60, None
        while run_id is None and time.monotonic() < deadline:
            run_id = _uuid((await _ops(incident))[0])
            if run_id is None:
                await asyncio.sleep(0.1)
        if run_id is None:
            raise TimeoutError(f"no flow run for incident {incident}")
        await wait_suspended(prefect, run_id, 180)
        result.to_suspended_s = time.monotonic() - posted
        code = None
        for _ in range(50):  # the codes go out before the approval is recorded
            if code := _code(sb, APPROVER, run_id):
                break
            await asyncio.sleep(0.1)
        if not code:
            raise TimeoutError(f"no one-time code for {APPROVER} in the Slack sink")
        if any(e["operation"] == ACT_OPERATION for e in sb.journal()[before:]):
            result.problem = "rolled back before the approval"
        # a human answers seconds (or minutes) after the request, never within milliseconds of
        # it: answering at once only measured the resume colliding with the suspending
        # process's last writes (on the embedded SQLite: "database is locked", a 2-s retry)
        await asyncio.sleep(
            max(0.0, answer_after_s - (time.monotonic() - posted - result.to_suspended_s))
        )

        result.load = os.getloadavg()[0]
        resumed = time.time()
        answered = await prefect.resume_flow_run(
            uuid.UUID(run_id),
            run_input={
                "approve": True,
                "approver": APPROVER,
                "code": code,
                "reason": "bench.approval_to_act",
            },
        )
        if answered.status != SetStateStatus.ACCEPT:
            raise TimeoutError(f"resume not accepted: {answered.status} {answered.details}")

        first, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            first = next(
                (e for e in sb.journal()[before:] if e["operation"] == ACT_OPERATION), None
            )
            if first is not None:
                break
            await asyncio.sleep(0.02)
        if first is None:
            result.problem = "no rollback in the journal"
        else:
            result.to_act_s = _ts(first["ts"]) - resumed

        run = await _wait_final(prefect, run_id, 240)
        result.final_state = str(run.state.type.value if run.state else "?")
        result.acts = sum(1 for e in sb.journal()[before:] if e["operation"] == ACT_OPERATION)
        _, events, result.ledger_done = await _ops(incident)
        result.events = [f"{e['kind']}@{_ts(e['at']) - resumed:+.2f}" for e in events]

        states = await prefect.read_flow_run_states(uuid.UUID(run_id))
        after = [s for s in states if s.timestamp and _ts(s.timestamp) >= resumed - 0.5]

        def first_of(kind: StateType) -> float:
            return min((_ts(s.timestamp) for s in after if s.type == kind), default=0.0)

        scheduled = first_of(StateType.SCHEDULED)
        pending, running = first_of(StateType.PENDING), first_of(StateType.RUNNING)

        def event_at(kind: str) -> float:
            return min(
                (_ts(e["at"]) for e in events if e["kind"] == kind and _ts(e["at"]) >= resumed),
                default=0.0,
            )

        marks = [
            resumed,
            scheduled,
            pending,
            running,
            event_at("resumed"),
            event_at("decided"),
            event_at("approved"),
            _ts(first["ts"]) if first else 0.0,
        ]
        if all(marks):
            result.stages = {
                key: later - earlier
                for (key, _), (earlier, later) in zip(STAGES, pairwise(marks), strict=True)
            }
        else:
            result.problem = result.problem or f"breakdown incomplete: {marks}"
    except TimeoutError as exc:
        result.problem = str(exc)
        # what the run decided instead (its timeline), so a miss can be told from a slow run
        _, events, _ = await _ops(incident)
        result.events = [f"{e['kind']}: {e.get('summary', '')[:160]}" for e in events]
    finally:
        await http.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(scenario, "resolved", started, fingerprint),
            headers=headers,
        )
    if not result.once and not result.problem:
        result.problem = f"{result.acts} rollbacks in the journal, {result.ledger_done} done rows"
    return result


# -- report ----------------------------------------------------------------------------------------
def _line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<58} -"
    return (
        f"{label:<58} median {statistics.median(values):6.2f} s   p95 {_pct(values, 0.95):6.2f} s"
        f"   (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
    )


def report(results: list[Result], *, busy: bool, prefect_db: str = "sqlite") -> None:
    print()
    for r in results:
        took = f"{r.to_act_s:6.2f} s" if r.to_act_s is not None else "   -   "
        print(
            f"  fault wait {r.fault_wait_s:5.1f} s  alert→suspended {r.to_suspended_s:5.1f} s"
            f"  resume → act {took}  acts {r.acts} ledger {r.ledger_done} {r.final_state:<10}"
            f" load {r.load:4.2f}  {r.problem}"
        )
        if r.problem:
            print(f"      events: {' '.join(r.events)}")
    timed = [r.to_act_s for r in results if r.to_act_s is not None]
    print(f"\n{len(results)} runs, rollback exactly once in {sum(r.once for r in results)}")
    print(_line("resume → rollback in the journal", timed))
    print(_line("alert POST → Suspended (not counted)", [r.to_suspended_s for r in results]))
    for key, label in STAGES:
        print(_line(f"  {label}", [r.stages[key] for r in results if r.stages]))
    loads = [r.load for r in results]
    print(
        f"\nload (1 min) at the resume calls: median {statistics.median(loads):.2f},"
        f" max {max(loads):.2f}" + (" — machine BUSY" if busy else "")
    )
    if not timed:
        return
    median = statistics.median(timed)
    met = "met" if median <= TARGET_S else "NOT met"
    print(f"target ≤ {TARGET_S:g} s (median): {met} ({median:.2f} s)")
    today = datetime.now(UTC).date().isoformat()
    print("\nmarkdown rows for docs/benchmarks.md:\n")
    print("| figure | runs | median | p95 | rollback exactly once | measured |")
    print("|---|---|---|---|---|---|")
    print(
        f"| **approval answered → rollback in the journal** (target ≤ {TARGET_S:g} s)"
        f" | {len(results)} | **{median:.2f} s** | {_pct(timed, 0.95):.2f} s"
        f" | {sum(r.once for r in results)}/{len(results)}"
        f" | {today}, 2 cores, load {statistics.median(loads):.1f}{', busy' if busy else ''},"
        f" Prefect on {prefect_db} |"
    )
    print("\n| stage | median | p95 |\n|---|---|---|")
    staged = [r for r in results if r.stages]
    for key, label in STAGES:
        values = [r.stages[key] for r in staged]
        if values:
            print(f"| {label} | {statistics.median(values):.2f} s | {_pct(values, 0.95):.2f} s |")


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


# -- main ------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30, help="measured runs")
    parser.add_argument("--warmup", type=int, default=2, help="runs first, not counted")
    parser.add_argument("--max-load", type=float, default=1.5, help="1-min load to wait for")
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="s to wait for it, max")
    parser.add_argument(
        "--answer-after",
        type=float,
        default=2.0,
        help="s after the run suspended before the answer (a human's delay; not counted)",
    )
    add_prefect_db_option(parser)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)

    from flows.registry import FLOWS
    from runbook.settings import get_settings

    deadline = time.monotonic() + args.quiet_wait
    quiet = wait_for_quiet(args.max_load, deadline)
    os.environ.update(BENCH_ENV)  # the stack's processes inherit it
    home = Path(tempfile.mkdtemp(prefix="runbook-bench-approve-"))
    stack = Stack(
        home, flows=len(FLOWS), ui=False, prefect_on_postgres=args.prefect_db == "postgres"
    )
    results: list[Result] = []
    was_quiet = quiet
    try:
        t0 = time.monotonic()
        start_stack(stack)
        print(f"stack up in {time.monotonic() - t0:.0f} s ({home})", flush=True)
        get_settings.cache_clear()
        assert stack.server is not None
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def bench() -> bool:
            async with httpx.AsyncClient(timeout=10) as http, get_client() as prefect:
                for i in range(args.warmup):
                    r = await one_run(stack, http, prefect, args.answer_after)
                    print(f"warm-up {i + 1}: {r.to_act_s} s {r.problem}", flush=True)
                quiet_now = await asyncio.to_thread(wait_for_quiet, args.max_load, deadline)
                for i in range(args.runs):
                    r = await one_run(stack, http, prefect, args.answer_after)
                    results.append(r)
                    took = f"{r.to_act_s:.2f} s" if r.to_act_s is not None else "-"
                    stages = " ".join(f"{k} {v:.2f}" for k, v in r.stages.items())
                    print(
                        f"run {i + 1}/{args.runs}: resume → act {took} ({stages})"
                        f" load {r.load:.2f} {r.problem}",
                        flush=True,
                    )
                return quiet and quiet_now

        with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}):
            was_quiet = asyncio.run(bench())
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        was_quiet = False
    finally:
        print("stopping every process the benchmark started …", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if results:
        report(results, busy=not was_quiet, prefect_db=args.prefect_db)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
