"""Scale-out, exercised: a Prefect server on PostgreSQL, `prefect deploy --all` onto a process
work pool, two workers, the approval sweeper and two intake copies sharing one ops database,
against the sandbox (`tests/e2e/scale_out_stack.py` starts them as docs/operations.md says).

1. An alert storm split across both intakes: 4 alerts x 25 duplicate deliveries, two of them
   resolved mid-storm. One flow run per open incident, none started remediation for a resolved
   one, one act per open incident (ledger `done` + the sandbox journal).
2. An approval answered while the run is suspended: the worker that ran the run is SIGKILLed
   while it waits; the other worker reruns it after the answer; the rollback happens once.
3. With one worker dead, a new incident completes on the survivor.

Figures (runs and acts per incident, storm timings) are printed (`-s`) and kept in
docs/scaling.md. Run: `.venv/bin/pytest -n0 -s tests/e2e/test_scale_out.py`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runbook.cli.demo import Scenario, _code, alertmanager_payload
from tests.e2e.scale_out_stack import INTAKES, WORKERS, ScaleOutStack

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]

DUPLICATES = 25
PG_ADMIN_URL = os.environ.get("RUNBOOK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

# two open incidents whose faults do not mask each other, each with one act on the sandbox
HIGH_LOAD = Scenario(
    name="high-load",
    fault="high-load",
    alert="HighLatency",
    summary="P99 latency above 10s for 5 minutes",
    flow="high-latency",
    decision="scale_replicas",
    action="scale_replicas",
)
LLM_OUTAGE = Scenario(
    name="llm-outage",
    fault="llm-outage",
    alert="LLMErrors",
    summary="OpenAI API errors (503) on the primary model",
    flow="llm-provider",
    decision="fallback",
    action="switch_model",
)
# two incidents resolved mid-storm (their alerts stop firing): no remediation may start
DB_POOL = Scenario(
    name="db-pool",
    fault="",
    alert="DatabaseConnectionPoolExhausted",
    summary="Postgres connection pool exhausted",
    flow="database-connections",
    decision="none",
    action=None,
)
OUTAGE = Scenario(
    name="complete-outage",
    fault="",
    alert="CompleteOutage",
    summary="All health checks failing",
    flow="complete-outage",
    decision="none",
    action=None,
)
BAD_DEPLOY = Scenario(
    name="bad-deploy",
    fault="bad-deploy",
    alert="HighErrorRate",
    summary="Error rate above 5% for 5 minutes after a deploy",
    flow="high-error-rate",
    decision="rollback",
    action="rollback_deployment",
    approval=True,
)
RATE_LIMIT = Scenario(
    name="llm-rate-limit",
    fault="llm-rate-limit",
    alert="OpenAIRateLimited",
    summary="OpenAI 429 rate limit errors",
    flow="llm-provider",
    decision="fallback",
    action="switch_model",
)
JOURNAL_OP = {
    "scale_replicas": "environmentPatchCommit",
    "switch_model": "variableCollectionUpsert",
    "rollback_deployment": "deploymentRollback",
}


@pytest.fixture(scope="module")
def stack(sandbox_platform: Any) -> Iterator[ScaleOutStack]:
    sandbox_platform.reset()
    st = ScaleOutStack(
        Path(tempfile.mkdtemp(prefix="runbook-scaleout-")), sandbox_platform, PG_ADMIN_URL
    )
    try:
        started = time.monotonic()
        st.start()
        st.figures["stack_start_s"] = round(time.monotonic() - started, 1)
        yield st
    finally:
        st.stop()
        sandbox_platform.reset()
        _print_figures(st)


def _print_figures(st: ScaleOutStack) -> None:
    print(f"\nscale-out figures (logs in {st.home}):")
    for key, value in st.figures.items():
        print(f"  {key}: {value}")


# --- helpers ------------------------------------------------------------------------------


def ops(st: ScaleOutStack, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(st.env["RUNBOOK_OPS_DATABASE_URL"]) as conn:
        return list(conn.execute(sql, params).fetchall())


def ledger(st: ScaleOutStack, incident: str) -> list[tuple[str, str]]:
    return [
        (str(a), str(s))
        for a, s in ops(
            st,
            "SELECT action, status FROM runbook.actions WHERE incident_id = %s ORDER BY created_at",
            (incident,),
        )
    ]


def timeline(st: ScaleOutStack, incident: str) -> list[tuple[str, str]]:
    return [
        (str(k), str(s))
        for k, s in ops(
            st,
            "SELECT kind, summary FROM runbook.action_events WHERE incident_id = %s ORDER BY id",
            (incident,),
        )
    ]


def journal_ops(st: ScaleOutStack) -> Counter[str]:
    return Counter(e["operation"] for e in st.sandbox.journal())


async def deliver(
    client: httpx.AsyncClient, st: ScaleOutStack, intake: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """One Alertmanager delivery (bearer token, as intake requires); retried on 503 only."""
    for _ in range(20):
        answer = await client.post(
            f"{st.intake_urls[intake]}/alerts/alertmanager",
            json=payload,
            headers={"Authorization": f"Bearer {st.alert_token}"},
        )
        if answer.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert answer.status_code == 202, f"{intake}: {answer.status_code} {answer.text}"
    return dict(answer.json())


async def wait_runs_final(
    st: ScaleOutStack, incidents: list[str], timeout_s: float = 420.0, *, each_one: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Poll until every incident has a flow run (`each_one`) and all its runs are final."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = st.flow_runs()
        by_incident = {
            i: [r for r in runs if (r.get("parameters") or {}).get("incident_id") == i]
            for i in incidents
        }
        pending = {
            i: [r["state"]["name"] for r in rs if r["state"]["type"] not in FINAL]
            for i, rs in by_incident.items()
        }
        missing = [i for i, rs in by_incident.items() if each_one and not rs]
        if not any(pending.values()) and not missing:
            return by_incident
        if time.monotonic() > deadline:
            raise AssertionError(
                f"runs not final after {timeout_s:g} s: {pending}; no run yet: {missing}"
            )
        for name in WORKERS:
            assert st.alive(name) or name in st.killed, f"{name} died: {st.log(name)[-3000:]}"
        await asyncio.sleep(1)


async def wait_for(what: str, probe: Any, timeout_s: float = 300.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def worker_of(run: dict[str, Any]) -> str:
    return str((run.get("labels") or {}).get("prefect.worker.name", "?"))


# --- 0. the stack ---------------------------------------------------------------------------


def test_deploy_all_registers_every_flow_on_the_process_pool(stack: ScaleOutStack) -> None:
    from flows.registry import FLOWS

    deployments = stack.deployments()
    assert len(deployments) == len(FLOWS), [d["name"] for d in deployments]
    assert {d["name"] for d in deployments} == {"runbook"}
    assert {d["work_pool_name"] for d in deployments} == {"runbook"}
    # the server keeps them in PostgreSQL (not SQLite): read them back from its database
    with psycopg.connect(stack.prefect_db_url) as conn:
        row = conn.execute("SELECT count(*) FROM deployment WHERE name = 'runbook'").fetchone()
    assert row is not None and row[0] == len(FLOWS)
    pool = stack.api("GET", "/work_pools/runbook")
    assert pool["type"] == "process"
    online = sorted(w["name"] for w in stack.workers() if w["status"] == "ONLINE")
    assert online == sorted(WORKERS)


# --- 1. the storm ---------------------------------------------------------------------------


async def test_storm_across_two_intakes_one_run_and_one_act_per_open_incident(
    stack: ScaleOutStack,
) -> None:
    sb = stack.sandbox
    sb.reset()
    open_ones, resolved_ones = [HIGH_LOAD, LLM_OUTAGE], [DB_POOL, OUTAGE]
    for s in open_ones:
        sb.inject(s.fault)
    await asyncio.sleep(15)  # the symptoms the flows decide on (P99, LLM errors) build up
    journal_before = journal_ops(stack)
    started = datetime.now(UTC)
    fingerprints = {s.name: uuid.uuid4().hex[:16] for s in (*open_ones, *resolved_ones)}
    firing = {
        s.name: alertmanager_payload(s, "firing", started, fingerprints[s.name])
        for s in (*open_ones, *resolved_ones)
    }
    # each alert's deliveries alternate between intake a and intake b (an Alertmanager HA pair
    # behind a load balancer); the alerts are interleaved round-robin
    sent: Counter[str] = Counter()

    def to(s: Scenario, status: str = "firing") -> tuple[Scenario, str, str]:
        sent[s.name] += 1
        return s, status, INTAKES[sent[s.name] % len(INTAKES)]

    # wave 1: every firing delivery of the incidents that will resolve, half of the others'
    wave1 = [
        to(s)
        for i in range(DUPLICATES)
        for s in (*resolved_ones, *(open_ones if i < DUPLICATES // 2 else ()))
    ]
    # wave 2: the resolutions mid-storm, while the open incidents' duplicates keep coming
    rest = [to(s) for _ in range(DUPLICATES - DUPLICATES // 2) for s in open_ones]
    wave2 = [*rest[:4], to(resolved_ones[0], "resolved"), *rest[4:8]]
    wave2 += [to(resolved_ones[1], "resolved"), *rest[8:]]
    answers: dict[str, list[dict[str, Any]]] = {s.name: [] for s in (*open_ones, *resolved_ones)}
    via: dict[str, Counter[str]] = {s.name: Counter() for s in (*open_ones, *resolved_ones)}
    resolutions: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(8)  # deliveries in flight

    async def send(client: httpx.AsyncClient, s: Scenario, status: str, intake: str) -> None:
        async with gate:
            if status == "firing":
                answers[s.name].append(await deliver(client, stack, intake, firing[s.name]))
                via[s.name][intake] += 1
            else:
                payload = alertmanager_payload(s, "resolved", started, fingerprints[s.name])
                resolutions[s.name] = await deliver(client, stack, intake, payload)

    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(send(client, *d) for d in wave1))
        await asyncio.gather(*(send(client, *d) for d in wave2))
    acked_s = time.monotonic() - t0
    deliveries = sum(len(a) for a in answers.values()) + len(resolutions)

    incidents: dict[str, str] = {}
    for s in (*open_ones, *resolved_ones):
        got = answers[s.name]
        assert len(got) == DUPLICATES
        halves = [DUPLICATES // 2, DUPLICATES - DUPLICATES // 2]
        assert sorted(via[s.name].values()) == halves, f"split over both intakes: {via[s.name]}"
        assert {a["route"] for a in got} == {s.flow}, {a["route"] for a in got}
        ids = {a["incident"] for a in got}
        assert len(ids) == 1, f"{s.name}: duplicates split into incidents {ids}"
        assert [a["status"] for a in got].count("new") == 1, Counter(a["status"] for a in got)
        incidents[s.name] = ids.pop()
    for s in resolved_ones:
        assert resolutions[s.name]["incident"] == incidents[s.name]
        assert resolutions[s.name]["status"] == "resolved"
    rows = dict(
        ops(
            stack,
            "SELECT id::text, status FROM runbook.incidents WHERE id::text = ANY(%s)",
            (list(incidents.values()),),
        )
    )
    for s in open_ones:
        assert rows[incidents[s.name]] == "open"
    for s in resolved_ones:
        assert rows[incidents[s.name]] == "resolved"

    # the open incidents' runs: one each, completed; the resolved ones' runs (if dispatched
    # before the resolution) completed too
    open_ids = [incidents[s.name] for s in open_ones]
    await wait_runs_final(stack, open_ids)
    # a resolved incident may have no run at all (resolved before dispatch)
    runs = await wait_runs_final(stack, list(incidents.values()), each_one=False)
    finished_s = time.monotonic() - t0
    journal = journal_ops(stack) - journal_before
    figures: dict[str, Any] = {}
    for s in open_ones:
        incident = incidents[s.name]
        mine = runs[incident]
        assert len(mine) == 1, f"{s.name}: {len(mine)} flow runs for one incident"
        run = mine[0]
        assert run["state"]["type"] == "COMPLETED", (
            s.name,
            run["state"],
            timeline(stack, incident),
        )
        assert worker_of(run) in WORKERS
        done = [a for a, st in ledger(stack, incident) if st == "done"]
        assert done == [s.action], (s.name, ledger(stack, incident), timeline(stack, incident))
        assert s.action is not None
        assert journal[JOURNAL_OP[s.action]] == 1, (s.name, journal)
        figures[s.name] = f"runs 1 on {worker_of(run)}, acts {len(done)} ({s.action})"
    for s in resolved_ones:
        incident = incidents[s.name]
        mine = runs[incident]
        outbox = ops(
            stack,
            "SELECT result FROM runbook.outbox WHERE incident_id::text = %s AND action = 'flow'",
            (incident,),
        )
        result = str(outbox[0][0]) if outbox else "?"
        if not mine:  # resolved before dispatch: the dispatch was cancelled, no run
            assert result == "cancelled", f"{s.name}: no run, outbox says {result!r}"
            path = "resolved before dispatch: outbox cancelled, no run"
        else:  # the run was created first: it saw the resolution when it started, did nothing
            assert len(mine) == 1, f"{s.name}: {len(mine)} runs"
            assert mine[0]["state"]["type"] == "COMPLETED", mine[0]["state"]
            events = timeline(stack, incident)
            assert any("resolved before the flow started" in t for _, t in events), events
            resolved_at = ops(
                stack, "SELECT resolved_at FROM runbook.incidents WHERE id::text = %s", (incident,)
            )[0][0]
            created = datetime.fromisoformat(mine[0]["created"])
            lead = (resolved_at - created).total_seconds()
            path = (
                f"run created {abs(lead):.1f} s {'before' if lead >= 0 else 'AFTER'} the"
                f" resolution (outbox {result!r}); the run ({worker_of(mine[0])}) found it"
                " resolved and did nothing"
            )
        assert ledger(stack, incident) == [], f"{s.name}: {ledger(stack, incident)}"
        figures[s.name] = f"resolved mid-storm; {path}; acts 0"
    acted = {op: n for op, n in journal.items() if n}
    assert acted == {"environmentPatchCommit": 1, "variableCollectionUpsert": 1}, acted

    ran_on = Counter(worker_of(r) for rs in runs.values() for r in rs)
    stack.figures["storm"] = (
        f"{deliveries} deliveries ({len(incidents)} alerts x {DUPLICATES} + "
        f"{len(resolutions)} resolutions) over {len(INTAKES)} intakes acked in {acked_s:.1f} s; "
        f"all runs final {finished_s:.1f} s after the first delivery"
    )
    stack.figures["storm runs by worker"] = dict(ran_on)
    stack.figures["storm claims lost to the other worker"] = sum(
        stack.log(w).count("Aborted submission of flow run") for w in WORKERS
    )
    for name, line in figures.items():
        stack.figures[f"storm {name}"] = line
    print("\n" + "\n".join(f"{k}: {v}" for k, v in stack.figures.items()))

    # the alerts clear: close the open incidents, the next phases start from a healthy platform
    async with httpx.AsyncClient(timeout=30) as client:
        for s in open_ones:
            payload = alertmanager_payload(s, "resolved", started, fingerprints[s.name])
            await deliver(client, stack, "intake-b", payload)
    sb.reset()


# --- 2. approval while suspended, its worker killed ---------------------------------------


async def test_approval_answered_while_suspended_is_rerun_by_the_other_worker(
    stack: ScaleOutStack,
) -> None:
    sb = stack.sandbox
    sb.reset()
    sb.inject(BAD_DEPLOY.fault)
    await asyncio.sleep(20)  # 18 % of chats fail: enough of it in the recent window
    before = journal_ops(stack)["deploymentRollback"]
    started, fingerprint = datetime.now(UTC), uuid.uuid4().hex[:16]
    async with httpx.AsyncClient(timeout=30) as client:
        payload = alertmanager_payload(BAD_DEPLOY, "firing", started, fingerprint)
        answer = await deliver(client, stack, "intake-b", payload)
    assert answer["route"] == BAD_DEPLOY.flow and answer["status"] == "new", answer
    incident = answer["incident"]

    def gate() -> str | None:
        rows = ops(
            stack,
            "SELECT flow_run_id FROM runbook.approvals"
            " WHERE incident_id = %s AND status = 'waiting'",
            (incident,),
        )
        return str(rows[0][0]) if rows else None

    run_id = await wait_for("the rollback's approval request", gate, timeout_s=300)

    def suspended() -> dict[str, Any] | None:
        run = stack.api("GET", f"/flow_runs/{run_id}")
        return run if run["state"]["name"] == "Suspended" else None

    run = await wait_for("the run to suspend", suspended, timeout_s=120)
    assert run["deployment_id"] and (run["parameters"] or {}).get("incident_id") == incident
    first = worker_of(run)
    assert first in WORKERS, run.get("labels")
    survivor = next(w for w in WORKERS if w != first)
    stack.kill(first)  # SIGKILL of its process group while the run waits for the answer
    assert not stack.alive(first) and stack.alive(survivor)
    assert journal_ops(stack)["deploymentRollback"] == before, "no rollback before approval"
    code = await wait_for("oncall's one-time code", lambda: _code(sb, "oncall", run_id), 60)
    t0 = time.monotonic()
    approved = stack.cli(
        ["runbook", "approve", run_id, "--approver", "oncall", "--code", code, "--reason", "e2e"],
        check=False,
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr

    runs = await wait_runs_final(stack, [incident], timeout_s=300)
    resumed_s = time.monotonic() - t0
    assert len(runs[incident]) == 1, "the rerun after the answer is the same flow run"
    final = runs[incident][0]
    assert final["id"] == run_id
    assert final["state"]["type"] == "COMPLETED", (final["state"], timeline(stack, incident))
    assert worker_of(final) == survivor, final.get("labels")
    assert [(a, st) for a, st in ledger(stack, incident) if st == "done"] == [
        ("rollback_deployment", "done")
    ], ledger(stack, incident)
    assert journal_ops(stack)["deploymentRollback"] == before + 1, "rolled back exactly once"
    events = timeline(stack, incident)
    assert any("approved by oncall" in t for _, t in events), events
    finished = [t for k, t in events if k == "finished"]
    assert finished and finished[-1].startswith("rollback (verified)"), finished
    assert f"Worker '{survivor}' submitting flow run '{run_id}'" in stack.log(survivor)
    stack.figures["approval"] = (
        f"run {run_id[:8]} suspended on {first} (then SIGKILLed), resumed and completed on "
        f"{survivor} {resumed_s:.1f} s after `runbook approve`; runs 1, acts 1 (rollback)"
    )
    print(f"\napproval: {stack.figures['approval']}")
    async with httpx.AsyncClient(timeout=30) as client:
        payload = alertmanager_payload(BAD_DEPLOY, "resolved", started, fingerprint)
        await deliver(client, stack, "intake-a", payload)
    sb.reset()


# --- 3. a new incident after a worker was killed ------------------------------------------


async def test_after_a_worker_is_killed_new_work_completes_on_the_survivor(
    stack: ScaleOutStack,
) -> None:
    if not stack.killed:  # the approval test failed before its kill: kill one here
        stack.kill(WORKERS[0])
    dead = stack.killed[0]
    survivor = next(w for w in WORKERS if w != dead)
    assert stack.alive(survivor)
    sb = stack.sandbox
    sb.reset()
    sb.inject(RATE_LIMIT.fault)
    await asyncio.sleep(10)
    before = journal_ops(stack)["variableCollectionUpsert"]
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        payload = alertmanager_payload(RATE_LIMIT, "firing", datetime.now(UTC), uuid.uuid4().hex)
        answer = await deliver(client, stack, "intake-a", payload)
    assert answer["route"] == RATE_LIMIT.flow and answer["status"] == "new", answer
    incident = answer["incident"]
    runs = await wait_runs_final(stack, [incident], timeout_s=300)
    took = time.monotonic() - t0
    assert len(runs[incident]) == 1
    run = runs[incident][0]
    assert run["state"]["type"] == "COMPLETED", (run["state"], timeline(stack, incident))
    assert worker_of(run) == survivor
    assert [a for a, st in ledger(stack, incident) if st == "done"] == ["switch_model"]
    assert journal_ops(stack)["variableCollectionUpsert"] == before + 1
    stack.figures["after kill"] = (
        f"{dead} SIGKILLed; new incident's run completed on {survivor} {took:.1f} s after "
        "its alert; runs 1, acts 1 (switch_model)"
    )
    print(f"\nafter kill: {stack.figures['after kill']}")
    sb.reset()
