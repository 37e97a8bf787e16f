"""Benchmark: alert → first safe action (issue #15, item 1).

One local stack, as `runbook demo` starts it (`sandbox.local.stack.Stack`: Prefect server, the
sandbox, an ops database, the intake, `runbook serve` with every flow, the runner polling every
`PREFECT_RUNNER_POLL_FREQUENCY` = 1 s as the stack sets it). Then, per run, alternating the two
scenarios:

- high-load  → HighLatency alert → high-latency flow → scale_replicas (Railway replicas);
- llm-outage → LLMErrors alert   → llm-provider flow → switch_model (DEFAULT_MODEL → fallback);

reset the sandbox, inject the fault, poll until the symptom is what the flow needs to act on (the
flow's own reads and `decide`, called as plain functions: no Prefect task runs), post a real
Alertmanager delivery with a fresh fingerprint, and time

- the intake's 202 (ack latency),
- POST → the first journal entry of the act in the sandbox (the Railway mutation itself),
- where that time goes: ack → flow run created (Prefect's `created`), → Pending (the runner
  picked it up), → Running (the flow-run process is up), → the flow's first timeline event,
  → `decided`, → the mutation;

then wait until the flow run is final (it verifies after acting), check the act happened exactly
once (journal entries of that act, ledger rows done), and resolve the alert.

    .venv/bin/python -m bench.alert_to_action [--runs 30] [--warmup 2] [--max-load 1.5]

The issue's comparison (high-load → scale replicas only, one measured run of each mode after
each of ours, so all three see the same machine):

    .venv/bin/python -m bench.alert_to_action --scenario high-load --peer --floor

- `--peer`: a plain Prefect served flow doing the same check + act, written as a user would
  (`PEER_SOURCE` below, ~30 lines: read the service's HTTP latency from the sandbox's Railway
  GraphQL `httpLogs`, scale replicas with `environmentPatchCommit` when P99 > 10 s), served with
  `flow.serve()` at Prefect's DEFAULT runner settings (poll every 10 s, a fresh spawned process
  per run), triggered with `run_deployment`; timed from the `run_deployment` call to the
  journal entry;
- `--floor`: the same check → decide → act called directly in this process (no Prefect); timed
  from the call to the journal entry.

Both print the ratios ours/peer and ours/floor (medians, ours = the high-load runs).

Before measuring it waits (up to `--quiet-wait` s, 15 min by default) until the 1-min load average
is below `--max-load`; after that it measures anyway and says the machine was busy. Every process
it started is stopped at the end, also on Ctrl-C or SIGTERM (`Stack.stop()`).
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
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook.cli.demo import SCENARIOS, Scenario, alertmanager_payload  # noqa: E402
from sandbox.local.stack import Stack  # noqa: E402

NAMES = ("high-load", "llm-outage")
# the journal's record of each act (the sandbox journals every client mutation)
ACT_OPERATIONS = {
    "high-load": {"environmentPatchCommit", "serviceInstanceUpdate"},
    "llm-outage": {"variableUpsert", "variableCollectionUpsert"},
}
LABELS = {"high-load": "high load → scale_replicas", "llm-outage": "LLM outage → switch_model"}
STAGES = (
    ("ack", "POST → 202 (intake ack)"),
    ("dispatch", "202 → flow run created (dispatcher)"),
    ("pickup", "created → Pending (event-driven pickup)"),
    ("launch", "Pending → Running (flow-run process)"),
    ("boot", "Running → flow's first timeline event"),
    ("diagnose", "first event → decided (observe + decide)"),
    ("act", "decided → mutation in the journal (safety + Railway)"),
)


@dataclass
class Result:
    scenario: str
    fault_wait_s: float = 0.0
    ack_s: float = 0.0
    status: int = 0
    to_action_s: float | None = None
    operations: list[str] = field(default_factory=list)  # every journal entry of the run
    acts: int = 0  # journal entries of the expected act
    ledger_done: int = 0  # runbook.actions rows done for the incident
    ledger_undone: int = 0  # rows undone: acted, verify failed, the act was reverted (+1 entry)
    final_state: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    problem: str = ""
    waited_for: str = ""  # other verdicts the flow would have reached before the symptom showed
    decided: str = ""  # what the flow decided

    @property
    def undone(self) -> bool:
        """Acted once, the verify failed and the act was reverted: its journal holds the act and
        the undo (the same operation), not a repeat."""
        return self.acts == 2 and self.ledger_undone == 1 and self.ledger_done == 0

    @property
    def once(self) -> bool:
        return (self.acts == 1 and self.ledger_done == 1) or self.undone

    @property
    def ok(self) -> bool:
        return self.to_action_s is not None and self.once and not self.problem


def _ts(value: str | datetime) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_quiet(limit: float, deadline: float, say: Any = print) -> bool:
    """Poll the 1-min load average until it is below `limit` or `deadline` (monotonic) passes;
    True when it was quiet."""
    last_said = 0.0
    while True:
        load = os.getloadavg()[0]
        if load < limit:
            return True
        if time.monotonic() >= deadline:
            say(f"machine still busy (load {load:.2f} ≥ {limit:g}): measuring anyway")
            return False
        if time.monotonic() - last_said > 60:
            say(f"waiting for a quiet machine: 1-min load {load:.2f} ≥ {limit:g} …")
            last_said = time.monotonic()
        time.sleep(5)


# -- the symptom, as the flow will judge it -------------------------------------------------------
_BLOCKS: dict[str, Any] = {}


async def _blocks() -> dict[str, Any]:
    """The blocks the two flows read, resolved once (as the flows resolve them)."""
    if not _BLOCKS:
        from blocks import AppDatabase, AppRedis, LangSmith, LlmProbe, Railway
        from blocks.policy import Policy

        names = ("db", "cache", "ls", "rw", "llm", "policy")
        found = await asyncio.gather(
            AppDatabase.resolve(),
            AppRedis.resolve(),
            LangSmith.resolve(),
            Railway.resolve(),
            LlmProbe.resolve(),
            Policy.resolve(),
        )
        _BLOCKS.update(zip(names, found, strict=True))
    return _BLOCKS


async def flow_would_act(name: str) -> str:
    """What the flow would decide now: its own `observe` and `decide`. The act we wait for is
    `fallback` / `scale_replicas`."""
    from tasks import llm

    b = await _blocks()
    if name == "llm-outage":  # the decisive read: the primary model's probe
        answer = await llm.get_model_health.fn(b["llm"], b["llm"].primary_model)
        return "provider-outage → fallback" if not answer.ok else "healthy → none"
    from flows.high_latency import decide, observe

    policy = b["policy"]
    # the flow's own diagnosis (its tasks run outside a flow run: plain task runs)
    signals, _ = await observe(b["db"], b["cache"], b["ls"], b["rw"], policy)
    signals = signals.model_copy(update={"fallback_model": b["llm"].fallback_model})
    decision = decide(signals, policy)
    return f"{decision.bound} → {decision.act}"


WANTED = {"high-load": "→ scale_replicas", "llm-outage": "→ fallback"}


async def wait_symptom(name: str, timeout_s: float = 90.0) -> tuple[float, str]:
    """Seconds until the flow would act, and the other verdicts seen meanwhile."""
    started, others = time.monotonic(), set()
    while not (verdict := await flow_would_act(name)).endswith(WANTED[name]):
        others.add(verdict)
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{name}: the flow would not act within {timeout_s:g} s ({verdict})")
        await asyncio.sleep(0.25)
    return time.monotonic() - started, ", ".join(sorted(others - {"none → none"}))


# -- what the ops database and Prefect saw ---------------------------------------------------------
async def _ops(incident: str) -> tuple[str | None, list[dict[str, Any]], int]:
    """(flow run id, timeline events, ledger rows done for the expected action)."""
    from psycopg.rows import dict_row

    from runbook import opsdb

    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT result FROM runbook.outbox WHERE incident_id = %s AND action = 'flow'",
            (incident,),
        )
        row = await cur.fetchone()
        await cur.execute(
            "SELECT at, kind, summary FROM runbook.action_events WHERE incident_id = %s"
            " ORDER BY id",
            (incident,),
        )
        events = list(await cur.fetchall())
        await cur.execute(
            "SELECT action, status FROM runbook.actions WHERE incident_id = %s", (incident,)
        )
        actions = list(await cur.fetchall())
    run_id = str(row["result"]) if row and row["result"] else None
    done = sum(1 for a in actions if a["status"] == "done")
    return run_id, events, done


async def _undone(incident: str) -> int:
    """Ledger rows of the incident reverted after a failed verify."""
    from runbook import opsdb

    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM runbook.actions WHERE incident_id = %s AND status = 'undone'",
            (incident,),
        )
        return int((await cur.fetchone() or (0,))[0])


def _uuid(text: str | None) -> str | None:
    """The outbox row's result when it is a flow run id (not `failed: …`)."""
    try:
        return str(uuid.UUID(text)) if text else None
    except ValueError:
        return None


async def _flow_run_id(incident: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run_id := _uuid((await _ops(incident))[0]):
            return run_id
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no flow run for incident {incident} within {timeout_s:g} s")


async def _wait_final(client: Any, run_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        run = await client.read_flow_run(uuid.UUID(run_id))
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {run_id} not final within {timeout_s:g} s")
        await asyncio.sleep(0.5)


# -- one run ---------------------------------------------------------------------------------------
async def one_run(stack: Stack, s: Scenario, http: httpx.AsyncClient, prefect: Any) -> Result:
    from prefect.client.schemas.objects import StateType

    sb = stack.sandbox
    result = Result(scenario=s.name)
    sb.reset()
    before = len(sb.journal())
    sb.inject(s.fault, target=s.fault_target)
    result.fault_wait_s, result.waited_for = await wait_symptom(s.name)

    started, fingerprint = datetime.now(UTC), uuid.uuid4().hex[:16]
    headers = {"Authorization": f"Bearer {stack.alert_token}"}
    result.load = os.getloadavg()[0]
    posted = time.time()
    answer = await http.post(
        f"{stack.intake_url}/alerts/alertmanager",
        json=alertmanager_payload(s, "firing", started, fingerprint),
        headers=headers,
    )
    acked = time.time()
    result.ack_s, result.status = acked - posted, answer.status_code
    incident = str(answer.json().get("incident") or "")
    if answer.status_code != 202 or not incident:
        result.problem = f"intake answered {answer.status_code}: {answer.text[:200]}"
        return result
    try:
        # the first mutation of the act: poll the journal, time it by the entry's own clock
        ops, deadline, first = ACT_OPERATIONS[s.name], time.monotonic() + 120, None
        run_id, polls = None, 0
        while first is None and time.monotonic() < deadline:
            first = next((e for e in sb.journal()[before:] if e["operation"] in ops), None)
            if first is not None:
                break
            polls += 1
            if polls % 10 == 0:  # about every second: did the run end without acting?
                run_id = run_id or _uuid((await _ops(incident))[0])
                if run_id:
                    run = await prefect.read_flow_run(uuid.UUID(run_id))
                    if run.state is not None and run.state.is_final():
                        break
            await asyncio.sleep(0.1)
        if first is None:
            result.problem = "no act in the journal"
        else:
            result.to_action_s = _ts(first["ts"]) - posted

        run_id = await _flow_run_id(incident, 60)
        run = await _wait_final(prefect, run_id, 240)
        result.final_state = str(run.state.type.value if run.state else "?")
        entries = sb.journal()[before:]
        result.operations = [e["operation"] for e in entries]
        result.acts = sum(1 for e in entries if e["operation"] in ops)
        _, events, result.ledger_done = await _ops(incident)
        result.ledger_undone = await _undone(incident)

        # the breakdown
        states = await prefect.read_flow_run_states(uuid.UUID(run_id))
        pending = min((_ts(x.timestamp) for x in states if x.type == StateType.PENDING), default=0)
        running = min((_ts(x.timestamp) for x in states if x.type == StateType.RUNNING), default=0)
        created = _ts(run.created)
        seen = [_ts(e["at"]) for e in events if e["kind"] == "seen"]
        decided = [_ts(e["at"]) for e in events if e["kind"] == "decided"]
        result.decided = next((e["summary"] for e in events if e["kind"] == "decided"), "")
        if first is not None and pending and running and seen and decided:
            acted = _ts(first["ts"])
            marks = [posted, acked, created, pending, running, seen[0], decided[0], acted]
            result.stages = {
                key: later - earlier
                for (key, _), (earlier, later) in zip(STAGES, pairwise(marks), strict=True)
            }
    except TimeoutError as exc:
        result.problem = str(exc)
    finally:  # the alert clears: close the incident (the next run opens a new one)
        await http.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(s, "resolved", started, fingerprint),
            headers=headers,
        )
    if not result.once and not result.problem:
        result.problem = (
            f"{result.acts} journal entries of the act, {result.ledger_done} ledger rows done"
        )
    return result


# -- the comparison: a plain Prefect served flow (peer) and no Prefect at all (floor) -------------
PEER_DEPLOYMENT = "scale-on-latency/peer"
PEER_SOURCE = """\
import os

import httpx
from prefect import flow, task

URL, TOKEN = os.environ["RUNBOOK_RAILWAY_ENDPOINT"], os.environ["RUNBOOK_RAILWAY_TOKEN"]
ENV = os.environ["RUNBOOK_RAILWAY_ENVIRONMENT_ID"]
SERVICE = os.environ["RUNBOOK_RAILWAY_SERVICE_ID"]


async def gql(query: str, **variables):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15) as c:
        answer = await c.post(URL, json={"query": query, "variables": variables})
        answer.raise_for_status()
        return answer.json()["data"]


async def read_latency():
    si = (await gql("query($e: String!, $s: String!) { serviceInstance(environmentId: $e,"
                    " serviceId: $s) { numReplicas region latestDeployment { id } } }",
                    e=ENV, s=SERVICE))["serviceInstance"]
    logs = (await gql("query($d: String!) { httpLogs(deploymentId: $d, limit: 100)"
                      " { totalDuration } }", d=si["latestDeployment"]["id"]))["httpLogs"]
    durations = sorted(line["totalDuration"] for line in logs) or [0]
    return si, durations[int(0.99 * (len(durations) - 1))]


async def scale(region: str, replicas: int):
    config = {"multiRegionConfig": {region: {"numReplicas": replicas}}}
    patch = {"services": {SERVICE: {"deploy": config}}}
    await gql("mutation($e: String!, $p: EnvironmentConfig) {"
              " environmentPatchCommit(environmentId: $e, patch: $p) }", e=ENV, p=patch)


async def check_and_act(p99_limit_ms: int = 10_000) -> str:
    si, p99 = await read_latency()
    if p99 <= p99_limit_ms:
        return f"p99 {p99} ms: nothing to do"
    await scale(si["region"] or "us-west2", si["numReplicas"] + 1)
    return f"p99 {p99} ms: scaled to {si['numReplicas'] + 1}"


@flow(name="scale-on-latency")
async def scale_on_latency(p99_limit_ms: int = 10_000) -> str:
    si, p99 = await task(read_latency)()
    if p99 <= p99_limit_ms:
        return f"p99 {p99} ms: nothing to do"
    await task(scale)(si["region"] or "us-west2", si["numReplicas"] + 1)
    return f"p99 {p99} ms: scaled to {si['numReplicas'] + 1}"


if __name__ == "__main__":
    scale_on_latency.serve(name="peer")
"""
PEER_STAGES = (
    ("call", "run_deployment call → flow run created"),
    ("pickup", "created → Pending (runner poll, default 10 s)"),
    ("launch", "Pending → Running (spawned flow-run process)"),
    ("act", "Running → mutation in the journal"),
)


@dataclass
class Compared:
    mode: str  # peer | floor
    to_action_s: float | None = None
    acts: int = 0
    final_state: str = ""
    outcome: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    problem: str = ""


def _write_peer(home: Path) -> Path:
    path = home / "peer_flow.py"
    path.write_text(PEER_SOURCE)
    return path


def start_peer(stack: Stack) -> Path:
    """The peer's file in the stack's home, served by its own process (a stack child, so it is
    stopped with the stack) with Prefect's default runner settings."""
    from sandbox.local import process

    path = _write_peer(stack.home)
    env = {**os.environ, **stack.env, "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)  # Prefect's default (10 s)
    env["PREFECT_HOME"] = str(stack.home / "prefect-peer")
    child = process.spawn([sys.executable, str(path)], env, stack.home / "peer.log")
    stack.children.append(child)
    return path


async def wait_peer_served(prefect: Any, child: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the peer exited with {child.returncode}; see peer.log")
        try:
            await prefect.read_deployment_by_name(PEER_DEPLOYMENT)
            return
        except Exception:
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the peer did not serve {PEER_DEPLOYMENT} within {timeout_s:g} s")


def _load_peer(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_peer_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _prepare(stack: Stack, s: Scenario) -> tuple[int, float, str]:
    sb = stack.sandbox
    sb.reset()
    before = len(sb.journal())
    sb.inject(s.fault, target=s.fault_target)
    waited, _ = await wait_symptom(s.name)
    return before, waited, ""


async def _first_act(stack: Stack, before: int, timeout_s: float = 120) -> dict[str, Any] | None:
    ops, deadline = ACT_OPERATIONS["high-load"], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entries: list[dict[str, Any]] = stack.sandbox.journal()[before:]
        found = next((e for e in entries if e["operation"] in ops), None)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    return None


async def peer_run(stack: Stack, s: Scenario, prefect: Any) -> Compared:
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    result = Compared(mode="peer")
    before, _, _ = await _prepare(stack, s)
    result.load = os.getloadavg()[0]
    called = time.time()
    run = await run_deployment(PEER_DEPLOYMENT, timeout=0)  # type: ignore[misc]
    first = await _first_act(stack, before)
    if first is None:
        result.problem = "no act in the journal"
    else:
        result.to_action_s = _ts(first["ts"]) - called
    try:
        final = await _wait_final(prefect, str(run.id), 120)
    except TimeoutError as exc:
        result.problem = result.problem or str(exc)
        return result
    result.final_state = str(final.state.type.value if final.state else "?")
    ops = ACT_OPERATIONS["high-load"]
    result.acts = sum(1 for e in stack.sandbox.journal()[before:] if e["operation"] in ops)
    states = await prefect.read_flow_run_states(run.id)
    pending = min((_ts(x.timestamp) for x in states if x.type == StateType.PENDING), default=0)
    running = min((_ts(x.timestamp) for x in states if x.type == StateType.RUNNING), default=0)
    if first is not None and pending and running:
        marks = [called, _ts(final.created), pending, running, _ts(first["ts"])]
        result.stages = {
            key: later - earlier
            for (key, _), (earlier, later) in zip(PEER_STAGES, pairwise(marks), strict=True)
        }
    if result.acts != 1 and not result.problem:
        result.problem = f"{result.acts} acts"
    return result


async def floor_run(stack: Stack, s: Scenario, module: Any) -> Compared:
    result = Compared(mode="floor")
    before, _, _ = await _prepare(stack, s)
    result.load = os.getloadavg()[0]
    called = time.time()
    result.outcome = await module.check_and_act()
    first = await _first_act(stack, before, timeout_s=10)
    if first is None:
        result.problem = f"no act in the journal ({result.outcome})"
    else:
        result.to_action_s = _ts(first["ts"]) - called
    ops = ACT_OPERATIONS["high-load"]
    result.acts = sum(1 for e in stack.sandbox.journal()[before:] if e["operation"] in ops)
    result.final_state = "-"
    return result


def add_prefect_db_option(parser: argparse.ArgumentParser) -> None:
    """`--prefect-db`: the Prefect server's database (both benchmarks of the stack have it)."""
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Prefect server's database: embedded SQLite (the demo's) or PostgreSQL"
        " (production's; a fresh database on the local server)",
    )


def report_compared(results: list[Result], compared: list[Compared], busy: bool) -> None:
    ours = [r.to_action_s for r in results if r.scenario == "high-load" and r.to_action_s]
    print("\nthe issue's comparison (high load → scale replicas):")
    for c in compared:
        took = f"{c.to_action_s:6.2f} s" if c.to_action_s is not None else "   -   "
        stages = " ".join(f"{k} {v:.2f}" for k, v in c.stages.items())
        print(
            f"  {c.mode:<5} → act {took} acts {c.acts} {c.final_state:<10} load {c.load:4.2f}"
            f"  {stages}  {c.outcome[:60]} {c.problem}"
        )
    today = datetime.now(UTC).date().isoformat()
    rows = [("ours: alert POST → act (intake, dispatch, `runbook serve`)", ours)]
    for mode, label in (
        ("peer", "peer: `run_deployment` → act (plain `flow.serve()`, default runner)"),
        ("floor", "floor: check → decide → act called in-process, no Prefect"),
    ):
        timed = [c.to_action_s for c in compared if c.mode == mode and c.to_action_s is not None]
        if timed:
            rows.append((label, timed))
    print("\nmarkdown rows for docs/benchmarks.md:\n")
    print("| path | runs | median | p95 | ours ÷ this (medians) |\n|---|---|---|---|---|")
    base = statistics.median(ours) if ours else None
    for label, values in rows:
        median = statistics.median(values)
        ratio = f"{base / median:.1f} x" if base and median else "-"
        print(
            f"| {label} | {len(values)} | {median:.2f} s | {_pct(values, 0.95):.2f} s | {ratio} |"
        )
    peer = [c for c in compared if c.mode == "peer" and c.stages]
    if peer:
        print("\n| peer stage | median | p95 |\n|---|---|---|")
        for key, label in PEER_STAGES:
            values = [c.stages[key] for c in peer]
            print(f"| {label} | {statistics.median(values):.2f} s | {_pct(values, 0.95):.2f} s |")
    loads = [c.load for c in compared] + [r.load for r in results]
    print(
        f"\nmeasured {today}, 2 cores, 1-min load median {statistics.median(loads):.2f},"
        f" max {max(loads):.2f}{' (busy)' if busy else ''}"
    )


# -- report ----------------------------------------------------------------------------------------
def _line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<55} -"
    return (
        f"{label:<55} median {statistics.median(values):6.2f} s   p95 {_pct(values, 0.95):6.2f} s"
        f"   (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
    )


def report(results: list[Result], *, busy: bool, quiet_load: float, args: Any) -> None:
    print()
    for r in results:
        took = f"{r.to_action_s:6.2f} s" if r.to_action_s is not None else "   -   "
        print(
            f"  {r.scenario:<11} fault wait {r.fault_wait_s:5.2f} s  ack {r.ack_s * 1000:6.1f} ms"
            f"  → act {took}  acts {r.acts} ledger {r.ledger_done}"
            f"{' (verify failed: undone)' if r.undone else ''}  {r.final_state:<10}"
            f" load {r.load:4.2f}  {','.join(r.operations)}  {r.problem}"
        )
        if r.problem or r.waited_for:
            print(f"      decided: {r.decided[:120]}; waited past: {r.waited_for or '-'}")
    played = [name for name in NAMES if any(r.scenario == name for r in results)]
    groups = {name: [r for r in results if r.scenario == name] for name in played}
    if len(played) > 1:  # one scenario played: "both" would repeat it
        groups["all"] = results
    for name, rows in groups.items():
        timed = [r.to_action_s for r in rows if r.to_action_s is not None]
        undone = sum(r.undone for r in rows)
        print(
            f"\n{name}: {len(rows)} runs, act exactly once in {sum(r.once for r in rows)}"
            + (f" ({undone} of them undone after a failed verify)" if undone else "")
        )
        print(_line("  POST → first mutation in the journal", timed))
        print(_line("  intake ack", [r.ack_s for r in rows]))
        waits = [r.fault_wait_s for r in rows]
        print(_line("  fault injected → symptom visible (not counted)", waits))
        for key, label in STAGES:
            print(_line(f"    {label}", [r.stages[key] for r in rows if r.stages]))
    loads = [r.load for r in results]
    print(
        f"\nload (1 min) when posting: median {statistics.median(loads):.2f},"
        f" max {max(loads):.2f}; before measuring {quiet_load:.2f}"
        + (" — machine BUSY (did not get below the limit)" if busy else "")
    )
    today = datetime.now(UTC).date().isoformat()
    print("\nmarkdown rows for docs/benchmarks.md:\n")
    print("| scenario | runs | median | p95 | act exactly once | measured |")
    print("|---|---|---|---|---|---|")
    for name, rows in groups.items():
        timed = [r.to_action_s for r in rows if r.to_action_s is not None]
        if not timed:
            continue
        print(
            f"| {LABELS.get(name, '**both**')} | {len(rows)} | {statistics.median(timed):.1f} s"
            f" | {_pct(timed, 0.95):.1f} s | {sum(r.once for r in rows)}/{len(rows)}"
            f" | {today}, 2 cores{', busy' if busy else ''} |"
        )
    print("\n| stage | median | p95 |\n|---|---|---|")
    staged = [r for r in results if r.stages]
    for key, label in STAGES:
        values = [r.stages[key] for r in staged]
        if values:
            print(f"| {label} | {statistics.median(values):.2f} s | {_pct(values, 0.95):.2f} s |")


# -- main ------------------------------------------------------------------------------------------
def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30, help="measured runs, scenarios alternate")
    parser.add_argument("--warmup", type=int, default=2, help="runs first, not counted")
    parser.add_argument("--max-load", type=float, default=1.5, help="1-min load to wait for")
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="s to wait for it, max")
    parser.add_argument(
        "--scenario", choices=("both", *NAMES), default="both", help="ours: which scenarios"
    )
    add_prefect_db_option(parser)
    parser.add_argument("--peer", action="store_true", help="also a plain served Prefect flow")
    parser.add_argument("--floor", action="store_true", help="also the check + act, no Prefect")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)

    from flows.registry import FLOWS
    from runbook.settings import get_settings

    chosen = {s.name: s for s in SCENARIOS if s.name in NAMES}
    order = NAMES if args.scenario == "both" else (args.scenario,)
    compared: list[Compared] = []
    deadline = time.monotonic() + args.quiet_wait
    quiet = wait_for_quiet(args.max_load, deadline)
    home = Path(tempfile.mkdtemp(prefix="runbook-bench-a2a-"))
    stack = Stack(
        home, flows=len(FLOWS), ui=False, prefect_on_postgres=args.prefect_db == "postgres"
    )
    results: list[Result] = []
    try:
        t0 = time.monotonic()
        stack.start(say=lambda m: print(m, flush=True))
        print(f"stack up in {time.monotonic() - t0:.0f} s ({home})", flush=True)
        get_settings.cache_clear()  # the stack's environment is now this process's
        assert stack.server is not None
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        peer_path = start_peer(stack) if args.peer else None
        peer_child = stack.children[-1] if args.peer else None

        async def compare(prefect: Any, warm: bool = False) -> None:
            high = chosen["high-load"]
            if args.peer:
                c = await peer_run(stack, high, prefect)
                print(
                    f"{'  warm-up ' if warm else '  '}peer: {c.to_action_s} s {c.problem}",
                    flush=True,
                )
                if not warm:
                    compared.append(c)
            if args.floor:
                c = await floor_run(stack, high, floor_module)
                print(
                    f"{'  warm-up ' if warm else '  '}floor: {c.to_action_s} s {c.problem}",
                    flush=True,
                )
                if not warm:
                    compared.append(c)

        async def bench() -> tuple[bool, float]:
            async with httpx.AsyncClient(timeout=10) as http, get_client() as prefect:
                if peer_child is not None:
                    await wait_peer_served(prefect, peer_child)
                for i in range(args.warmup):
                    s = chosen[order[i % len(order)]]
                    r = await one_run(stack, s, http, prefect)
                    print(f"warm-up {s.name}: {r.to_action_s} s {r.problem}", flush=True)
                    await compare(prefect, warm=True)
                quiet_now = await asyncio.to_thread(wait_for_quiet, args.max_load, deadline)
                load = os.getloadavg()[0]
                for i in range(args.runs):
                    s = chosen[order[i % len(order)]]
                    r = await one_run(stack, s, http, prefect)
                    results.append(r)
                    took = f"{r.to_action_s:.2f} s" if r.to_action_s is not None else "-"
                    print(
                        f"run {i + 1}/{args.runs} {s.name}: {took} (ack {r.ack_s * 1000:.0f} ms,"
                        f" acts {r.acts}) {r.problem}",
                        flush=True,
                    )
                    if s.name == "high-load":
                        await compare(prefect)
                return quiet and quiet_now, load

        # the floor: the peer's own check + act, imported here (its Prefect decorators unused)
        floor_module = _load_peer(peer_path or _write_peer(home)) if args.floor else None
        with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}):
            was_quiet, load = asyncio.run(bench())
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        was_quiet, load = False, os.getloadavg()[0]
    finally:
        print("stopping every process the benchmark started …", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stop finish
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if results:
        report(results, busy=not was_quiet, quiet_load=load, args=args)
    if compared:
        report_compared(results, compared, busy=not was_quiet)
    ok = all(r.ok for r in results) and not any(c.problem for c in compared)
    return 0 if results and ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
