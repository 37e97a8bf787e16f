"""`runbook demo`: a game day for the whole runbook. Each scenario plays one runbook section
against the sandbox: alert-driven ones inject a fault and post a real-format Alertmanager alert
to the intake; operator-started ones (a manual deploy, an RDS resize, a key rotation, a security
incident, the Sunday maintenance window run now with an injected clock) are `runbook run FLOW
--param k=v --as operator`, as an operator types it. The demo shows what each flow saw, decided
and did, answers (or tells a person how to answer) every approval — once per approver a
two-person act needs, each a different person with their own code — and ends with a summary.

Exit 0 only if every scenario ended as expected; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from psycopg.rows import dict_row
from pydantic import BaseModel, model_validator
from rich.console import Console
from rich.table import Table

from runbook import approvals, opsdb
from runbook.settings import get_settings
from sandbox.local import process
from sandbox.local.stack import Stack

# the demo stack's approvers (RUNBOOK_APPROVERS), in the order they answer: a two-person act's
# second approval is a different person's
APPROVERS = ("oncall", "lead")
# who asks for the operator-started runs (`runbook run --as`): never one of their approvers
OPERATOR = "operator"
# a game day acts on the same targets many times within the hour (production: 2 destructive
# acts per target per hour), and a store's old key stays valid a few seconds, not an hour
GAME_DAY_ENV = {
    "RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR": "100",
    "RUNBOOK_STORE_KEY_GRACE_S": "5",
}


class Scenario(BaseModel):
    name: str
    section: str = ""  # the runbook section it plays
    trigger: Literal["alert", "operator"] = "alert"
    fault: str | None = None  # injected first (None: a healthy platform, an operator's procedure)
    fault_target: str | None = None
    fault_wait_s: float | None = None  # symptoms before the alert (at most --fault-wait)
    alert: str = ""  # alert-driven: the Alertmanager alertname
    summary: str = ""
    labels: dict[str, str] = {}  # extra alert labels
    flow: str  # the flow that answers (the route, or the deployment an operator starts)
    params: dict[str, Any] = {}  # operator-started: the deployment's parameters
    clock: bool = False  # operator-started: the next Sunday 02:00 UTC as the flow's `now`
    decision: str  # the act the flow must choose
    action: str | None  # the ledger action expected "done", None = no platform change
    approvers: int = 0  # distinct approvers the expected action needs (two-person acts: 2)
    approval: bool = False  # = approvers > 0 (older spelling, kept for callers)

    @model_validator(mode="after")
    def _approvals(self) -> Scenario:
        if self.approval and not self.approvers:
            self.approvers = 1
        self.approval = self.approvers > 0
        return self


SCENARIOS = [
    Scenario(
        name="bad-deploy",
        section="§1 High Error Rate (bad deploy → rollback)",
        fault="bad-deploy",
        alert="HighErrorRate",
        summary="Error rate above 5% for 5 minutes after a deploy",
        flow="high-error-rate",
        decision="rollback",
        action="rollback_deployment",
        approvers=1,
    ),
    Scenario(
        name="integration-outage",
        section="§1 High Error Rate (Shopify down → notify)",
        fault="integration-outage",
        fault_target="shopify",
        fault_wait_s=12,
        alert="HighErrorRate",
        summary="Error rate above 2% for 5 minutes",
        flow="high-error-rate",
        decision="notify",
        action=None,
    ),
    Scenario(
        name="high-load",
        section="§2 High Latency (load → scale replicas)",
        fault="high-load",
        fault_wait_s=12,
        alert="HighLatency",
        summary="P99 latency above 10s for 5 minutes",
        flow="high-latency",
        decision="scale_replicas",
        action="scale_replicas",
    ),
    Scenario(
        name="llm-rate-limit",
        section="§3 LLM Provider Issues (429 → fallback model)",
        fault="llm-rate-limit",
        fault_wait_s=10,
        alert="OpenAIRateLimited",
        summary="OpenAI 429 rate limit errors",
        flow="llm-provider",
        decision="fallback",
        action="switch_model",
    ),
    Scenario(
        name="llm-outage",
        section="§3 LLM Provider Issues (503 → fallback model)",
        fault="llm-outage",
        fault_wait_s=10,
        alert="LLMErrors",
        summary="OpenAI API errors (503) on the primary model",
        flow="llm-provider",
        decision="fallback",
        action="switch_model",
    ),
    Scenario(
        name="db-pool-exhausted",
        section="§4 Database Connection Issues (pool exhausted → raise pool)",
        fault="db-pool-exhausted",
        fault_wait_s=10,
        alert="DatabaseConnectionPoolExhausted",
        summary="DB connections above 95% of the pool; connection pool exhausted",
        flow="database-connections",
        decision="raise_pool",
        action="set_pool_size",
    ),
    Scenario(
        name="db-down",
        section="§4 Database Connection Issues (database down → failover)",
        fault="db-down",
        fault_wait_s=8,
        alert="PostgresDown",
        summary="Database connection refused",
        flow="database-connections",
        decision="failover_db",
        action="failover_db",
        approvers=1,
    ),
    Scenario(
        name="complete-outage",
        section="§5 Complete Outage (crashed deploy → emergency rollback)",
        fault="complete-outage",
        fault_wait_s=5,
        alert="CompleteOutage",
        summary="All health checks failing",
        flow="complete-outage",
        decision="rollback",
        action="rollback_deployment",
        approvers=2,
    ),
    Scenario(
        name="deploy-regression",
        section="Deployment Procedures (manual deploy regresses → rollback)",
        trigger="operator",
        flow="manual-deploy",
        # a commit whose build errors on ~15 % of chats (the sandbox's "bad…" commits)
        params={
            "commit_sha": "bad0c0ffee42",
            "environment": "production",
            "window_s": 12,
            "verify_window_s": 30,
        },
        decision="rollback",
        action="rollback_deployment",
        approvers=1,
    ),
    Scenario(
        name="rds-resize",
        section="Scaling Procedures: Database Scaling (RDS class change)",
        trigger="operator",
        flow="rds-resize",
        params={"instance_class": "db.t3.large", "poll_s": 1.0, "verify_window_s": 30},
        decision="resize",
        action="modify_db_instance_class",
        approvers=2,
    ),
    Scenario(
        name="key-rotation",
        section="Security Procedures: Rotate API Keys (a store's key)",
        trigger="operator",
        flow="rotate-store-key",
        params={"store_id": "store-204", "verify_window_s": 30},
        decision="rotate",
        action="revoke_api_key",
        approvers=1,
    ),
    Scenario(
        name="security-incident",
        section="Security Procedures: Security Incident Response (leaked keys → disable)",
        trigger="operator",  # Security reports it; an operator starts the response
        fault="key-leak",
        fault_wait_s=3,
        flow="security-incident",
        decision="contain",
        action="disable_api_key",
        approvers=1,
    ),
    Scenario(
        name="maintenance",
        section="Maintenance Windows: Scheduled Maintenance (Sunday window, run now)",
        trigger="operator",
        flow="scheduled-maintenance",
        clock=True,
        decision="completed",
        action="redeploy_service",
        approvers=1,
    ),
]


class Row(BaseModel):
    scenario: str
    section: str = ""
    incident: str = ""
    flow: str = ""
    decision: str = ""
    action: str = "none"
    approver: str = ""
    seconds_to_action: float | None = None
    verified: bool | None = None
    ok: bool = False
    problem: str = ""


def alertmanager_payload(
    s: Scenario, status: str, started: datetime, fingerprint: str
) -> dict[str, Any]:
    labels = {
        "alertname": s.alert,
        "environment": "production",
        "severity": "critical",
        "service": "support-api",
        **s.labels,
    }
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": s.summary},
        "startsAt": started.isoformat().replace("+00:00", "Z"),
        "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if status == "resolved"
        else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1/sandbox",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{s.alert}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "runbook",
        "groupLabels": {"alertname": s.alert},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://127.0.0.1/alertmanager",
        "alerts": [alert],
    }


async def _events(incident: str, after: int) -> list[dict[str, Any]]:
    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, kind, summary FROM runbook.action_events"
            " WHERE incident_id = %s AND id > %s ORDER BY id",
            (incident, after),
        )
        return list(await cur.fetchall())


async def _waiting(incident: str) -> list[approvals.Waiting]:
    async with await opsdb.connect() as conn:
        return [w for w in await approvals.waiting(conn) if w.incident_id == incident]


async def _waiting_gate(incident: str) -> str | None:
    return next((w.flow_run_id for w in await _waiting(incident)), None)


async def _incident_named(prefix: str) -> str:
    """The incident a flow named itself (scheduled-maintenance: `maintenance-<window>-<run>`),
    once its timeline has a line."""
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT incident_id FROM runbook.action_events WHERE incident_id LIKE %s"
            " ORDER BY id LIMIT 1",
            (prefix.replace("%", "") + "%",),
        )
        found = await cur.fetchone()
    return str(found[0]) if found else ""


async def _run_of_incident(client: Any, incident: str) -> str | None:
    """The flow run the intake dispatched for the incident (its idempotency key)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[incident])),
        limit=1,
    )
    return str(runs[0].id) if runs else None


def _code(sandbox: Any, approver: str, run_id: str) -> str | None:
    for message in reversed(sandbox.sink("slack")):
        text = str(message.get("text", ""))
        if text.startswith(f"{approver}:") and run_id in text:
            found = re.search(r"\bis (\d{8})\b", text)
            return found.group(1) if found else None
    return None


def _point(sandbox: Any, w: approvals.Waiting) -> tuple[int, int]:
    """(n, m): this wait is approval n of the m distinct approvers its act needs (the team's
    Slack request says "Approval needed (n/m)"; the pause key ends in n)."""
    tail = w.pause_key.rsplit("-", 1)[-1]
    number = int(tail) if tail.isdigit() else 1
    for message in reversed(sandbox.sink("slack")):
        text = str(message.get("text", ""))
        found = re.search(r"Approval needed \((\d+)/(\d+)\)", text)
        if found and w.flow_run_id in text and int(found.group(1)) == number:
            return number, int(found.group(2))
    return number, number


async def _approve(
    run_id: str,
    code: str,
    approver: str = "oncall",
    pause_key: str | None = None,
    timeout_s: float = 60.0,
) -> bool:
    """Resume the waiting run with the code, once it is actually paused/suspended at this
    approval point (the approval row and the codes go out just before the run stops); True once
    Prefect accepted it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while time.monotonic() < deadline:
            run = await client.read_flow_run(uuid.UUID(run_id))
            state = run.state
            at_point = state is not None and (
                pause_key is None or state.state_details.pause_key in (None, pause_key)
            )
            if state is not None and state.is_paused() and at_point:
                result = await client.resume_flow_run(
                    uuid.UUID(run_id),
                    run_input={
                        "approve": True,
                        "approver": approver,
                        "code": code,
                        "reason": "demo --auto-approve",
                    },
                )
                if result.status == SetStateStatus.ACCEPT:
                    return True
            await asyncio.sleep(0.5)
    return False


async def _summarise(row: Row, s: Scenario, trigger_at: float, run_state: str | None = None) -> Row:
    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT kind, summary, at FROM runbook.action_events WHERE incident_id = %s"
            " ORDER BY id",
            (row.incident,),
        )
        events = await cur.fetchall()
        await cur.execute(
            "SELECT action, status, approvers, verified FROM runbook.actions"
            " WHERE incident_id = %s ORDER BY created_at",
            (row.incident,),
        )
        actions = await cur.fetchall()
    finished = [e["summary"] for e in events if e["kind"] == "finished"]
    decided = [e["summary"] for e in events if e["kind"] == "decided"]
    if decided:
        row.decision = decided[-1].split(":")[0]
    elif finished:  # a flow that records no decision line (the maintenance window)
        row.decision = finished[-1].split(" (")[0]
    else:
        row.decision = "?"
    done = [e for e in events if e["kind"] == "done"]
    if done:  # from the alert (or the operator's trigger) to the first act on the platform
        row.seconds_to_action = round(done[0]["at"].timestamp() - trigger_at, 1)
    expected = [a for a in actions if a["action"] == s.action]
    if expected or actions:
        shown = (expected or actions)[-1]
        row.action = f"{shown['action']} ({shown['status']})"
        row.approver = ", ".join(shown["approvers"])
    if finished:
        text = finished[-1]
        row.verified = False if "(NOT verified)" in text else True if "(verified)" in text else None
    if expected and expected[-1]["verified"] is not None:  # the act's own verify
        row.verified = bool(expected[-1]["verified"])
    problems = []
    if run_state is not None and run_state.startswith("exit") and not finished:
        problems.append(f"`runbook run` ended ({run_state}) before the flow finished")
    elif run_state is not None and not run_state.startswith("exit") and run_state != "COMPLETED":
        problems.append(f"the flow run ended {run_state}")
    if not re.search(rf"(^|→ ){re.escape(s.decision)}\b", row.decision):
        problems.append(f"decision {row.decision!r}, expected {s.decision}")
    if s.action and not any(a["status"] == "done" for a in expected):
        problems.append(f"{s.action} not done")
    if not s.action and actions:
        problems.append("acted although no platform change was expected")
    if s.action and row.verified is not True:
        problems.append("not verified")
    if s.approvers and expected:
        names = {n.strip().lower() for n in expected[-1]["approvers"] if n.strip()}
        if len(names) < s.approvers:
            problems.append(
                f"approved by {len(names)} distinct approver(s), {s.approvers} needed"
                if names
                else "acted without an approver"
            )
    row.problem = "; ".join(problems)
    row.ok = not problems
    return row


def next_sunday_window(now: datetime | None = None) -> datetime:
    """02:00 UTC of the coming Sunday: the maintenance window's clock, injected."""
    now = now or datetime.now(UTC)
    ahead = (6 - now.weekday()) % 7
    day = (now + timedelta(days=ahead)).replace(hour=2, minute=0, second=0, microsecond=0)
    return day if day > now else day + timedelta(days=7)


def operator_command(s: Scenario) -> tuple[list[str], str]:
    """The operator's `runbook run FLOW --param k=v … --as operator`, and the incident its run
    reports under — for the maintenance window, which names its own incident after the window
    and its run, the prefix `maintenance-<window>-`."""
    params = dict(s.params)
    if s.clock:
        now = next_sunday_window()
        params["now"] = now.isoformat()
        incident = f"maintenance-{now:%Y%m%d-%H%M}-"
    else:
        incident = f"manual-{uuid.uuid4().hex[:12]}"  # a manual run's incident of its own
        params["incident_id"] = incident
    args = ["run", s.flow]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    return [*args, "--as", OPERATOR], incident


async def _post_alert(
    stack: Stack, s: Scenario, status: str, started: datetime, fingerprint: str
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(s, status, started, fingerprint),
            headers={"Authorization": f"Bearer {stack.alert_token}"},
        )


async def _ask(stack: Stack, s: Scenario, w: approvals.Waiting, auto: bool, say: Any) -> None:
    """One approval point: tell the person (two-person acts: which of the two), and with
    --auto-approve answer as that approver with their own one-time code."""
    sb = stack.sandbox
    number, needed = _point(sb, w)
    approver = APPROVERS[min(number, len(APPROVERS)) - 1]
    code = _code(sb, approver, w.flow_run_id)
    link = f"{stack.server.url}/v2/runs/flow-run/{w.flow_run_id}" if stack.server else ""
    if needed > 1:
        who = (
            f"approval {number} of {needed}: {needed} different people must approve"
            f" ({', '.join(APPROVERS[:needed])}); this one as [bold]{approver}[/]"
        )
    else:
        who = f"approver [bold]{approver}[/]"
    say(
        f"  [yellow]approval needed[/] for {w.action} on {w.target} — {who}: open {link} →"
        f" Resume, tick approve, approver {approver}, code [bold]{code}[/], a reason (any"
        " text) → Resume. Or paste this line into another shell:"
    )
    say(
        f"    . {stack.home}/demo.env && {runbook_command()} approve {w.flow_run_id}"
        f" --approver {approver} --code {code} --reason '{s.name}'"
    )
    if auto and code:
        await asyncio.sleep(2)  # let a watching human see the request first
        if await _approve(w.flow_run_id, code, approver, w.pause_key):
            say(f"  [green]approved as {approver} through the API (--auto-approve)[/]")
        else:
            say("  [red]could not resume the waiting run[/]")


async def run_scenario(
    stack: Stack,
    s: Scenario,
    *,
    auto_approve: bool,
    fault_wait_s: float,
    timeout_s: float,
    say: Any,
) -> Row:
    from prefect.client.orchestration import get_client

    sb = stack.sandbox
    sb.reset()
    title = f"\n[bold]▶ {s.name}[/] ({s.section})"
    if s.fault:
        sb.inject(s.fault, target=s.fault_target)
        wait = fault_wait_s if s.fault_wait_s is None else min(s.fault_wait_s, fault_wait_s)
        say(f"{title}: injected [cyan]{s.fault}[/]; letting the symptoms build for {wait:g} s …")
        await asyncio.sleep(wait)
    else:
        say(f"{title}: an operator starts [bold]{s.flow}[/]")
    row = Row(scenario=s.name, section=s.section, flow=s.flow)
    run_id: str | None = None  # the flow run the intake started for the alert
    operator: subprocess.Popen[bytes] | None = None  # the operator's `runbook run`
    named = ""  # the incident prefix of a flow that names its incident itself
    started, fingerprint = datetime.now(UTC), uuid.uuid4().hex[:16]
    trigger_at = time.time()
    if s.trigger == "alert":
        answer = await _post_alert(stack, s, "firing", started, fingerprint)
        body = answer.json()
        row.incident, row.flow = str(body.get("incident") or ""), str(body.get("route") or "")
        say(
            f"  {started:%H:%M:%S} alert {s.alert} → intake {answer.status_code}"
            f" {body.get('status')} → route [bold]{row.flow}[/], incident {row.incident}"
        )
        if answer.status_code != 202 or not row.incident:
            row.problem = f"intake answered {answer.status_code}: {body}"
            return row
    else:
        args, incident = operator_command(s)
        named, row.incident = (incident, "") if s.clock else ("", incident)
        log = stack.home / f"run-{s.name}.log"
        operator = process.spawn([sys.executable, "-m", "runbook.cli", *args], os.environ, log)
        stack.children.append(operator)  # stopped with the stack, also on Ctrl-C
        say(f"  {started:%H:%M:%S} operator: runbook {shlex.join(args)}  (output: {log})")
    last_event, finished, run_state = 0, False, None
    handled: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        async with get_client() as client:
            while time.monotonic() < deadline and not finished:
                if operator is not None and operator.poll() is not None:
                    finished, run_state = True, f"exit {operator.returncode}"
                if named and not row.incident:
                    row.incident = await _incident_named(named)
                if run_id is None and s.trigger == "alert":
                    run_id = await _run_of_incident(client, row.incident)
                if run_id is not None:  # a run that ended (even one that crashed) is finished
                    state = (await client.read_flow_run(uuid.UUID(run_id))).state
                    if state is not None and state.is_final():
                        finished, run_state = True, state.type.value
                if row.incident:
                    for e in await _events(row.incident, last_event):
                        last_event = e["id"]
                        say(f"  {e['at']:%H:%M:%S} [magenta]{e['kind']:>9}[/] {e['summary']}")
                        finished = finished or e["kind"] == "finished"
                    for w in await _waiting(row.incident):
                        if (w.flow_run_id, w.pause_key) not in handled:
                            handled.add((w.flow_run_id, w.pause_key))
                            await _ask(stack, s, w, auto_approve, say)
                if not finished:
                    await asyncio.sleep(0.5)
            for _ in range(60):  # the timeline's last line, then the operator's process ends
                if operator is None or operator.poll() is not None:
                    break
                await asyncio.sleep(0.5)
            if operator is not None and operator.poll() is not None:
                run_state = f"exit {operator.returncode}"
    finally:
        if operator is not None:
            process.stop(operator)
            stack.children.remove(operator)
    if not finished:
        row.problem = f"the flow did not finish within {timeout_s:g} s"
    row = await _summarise(row, s, trigger_at, run_state)
    if s.trigger == "alert":  # the alert clears: close the incident
        await _post_alert(stack, s, "resolved", started, fingerprint)
    return row


def runbook_command() -> str:
    """`runbook` if another shell finds it on PATH, else this installation's full path (the
    README runs `.venv/bin/runbook` without activating the virtualenv)."""
    import shutil
    import sys

    here = Path(sys.executable).parent / "runbook"
    found = shutil.which("runbook")
    if found and Path(found).resolve() == here.resolve():
        return "runbook"
    return str(here) if here.exists() else "runbook"


def summary_table(rows: list[Row]) -> Table:
    table = Table(title="Demo summary", title_justify="left")
    widest = max((len(r.scenario) for r in rows), default=8)
    table.add_column("scenario", no_wrap=True, min_width=widest)
    for col in (
        "runbook section",
        "incident",
        "flow",
        "decision",
        "action",
        "approver",
        "s alert→action",
        "verified",
        "result",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.scenario,
            r.section.split(" (")[0],
            r.incident[:8] if len(r.incident) == 36 else r.incident,  # a uuid: its start
            r.flow,
            r.decision,
            r.action,
            r.approver or "-",
            f"{r.seconds_to_action:.1f}" if r.seconds_to_action is not None else "-",
            {True: "yes", False: "no", None: "-"}[r.verified],
            "[green]as expected[/]" if r.ok else f"[red]{r.problem}[/]",
        )
    return table


def scenario_table() -> Table:
    """`runbook demo --list`: each scenario, the runbook section it plays, how it starts."""
    table = Table(title="Demo scenarios", title_justify="left")
    for col in ("scenario", "runbook section", "trigger", "flow", "approvers"):
        table.add_column(col)
    for s in SCENARIOS:
        trigger = f"alert {s.alert}" if s.trigger == "alert" else "operator"
        approvers = {0: "-", 1: "1"}.get(s.approvers, f"{s.approvers} (distinct)")
        table.add_row(s.name, s.section, trigger, s.flow, approvers)
    return table


def choose(names: list[str] | None) -> list[Scenario]:
    """The scenarios to play, in the demo's order (none named: all); an unknown name is a
    ValueError naming the known ones."""
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        listed = ", ".join(s.name for s in SCENARIOS)
        raise ValueError(f"unknown scenario {unknown[0]!r}; known: {listed} (see --list)")
    return [s for s in SCENARIOS if not names or s.name in names]


def run_demo(
    *,
    auto_approve: bool,
    scenario: str | list[str] | None,
    home: Path,
    fault_wait_s: float = 20.0,
    timeout_s: float = 240.0,
    console: Console | None = None,
    keep: bool = False,
) -> int:
    """Play the chosen scenarios on a fresh local stack; 0 when every one ended as expected,
    1 otherwise, 130 when interrupted (Ctrl-C) — every process started is stopped in each case."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=160)
    chosen = choose([scenario] if isinstance(scenario, str) else scenario)
    from flows.registry import FLOWS

    def say(message: str) -> None:  # no hard line breaks: a printed command pastes whole
        console.print(message, highlight=False, soft_wrap=True)

    os.environ.update(GAME_DAY_ENV)  # the stack's processes inherit it
    stack = Stack(home, flows=len(FLOWS))
    rows: list[Row] = []
    rows_printed = interrupted = False
    began = time.monotonic()
    try:
        try:
            stack.start(say=say)
            get_settings.cache_clear()  # the stack's environment is now this process's
            if stack.server is None:
                raise RuntimeError("the local Prefect server did not start")
            console.print(f"Prefect UI: [link]{stack.server.url}[/]  intake: {stack.intake_url}")
            from prefect.settings import PREFECT_API_URL, temporary_settings

            # prefect may have been imported before the stack existed: point it at our server
            with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}):
                for s in chosen:
                    row = asyncio.run(
                        run_scenario(
                            stack,
                            s,
                            auto_approve=auto_approve,
                            fault_wait_s=fault_wait_s,
                            timeout_s=timeout_s,
                            say=say,
                        )
                    )
                    rows.append(row)
            if keep:
                console.print(summary_table(rows))
                rows_printed = True
                console.print(
                    f"--keep: the stack stays up — Prefect UI {stack.server.url}, intake"
                    f" {stack.intake_url}, environment in {home / 'demo.env'}."
                    " Press Ctrl-C to stop every process the demo started."
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        except KeyboardInterrupt:
            interrupted = True
    finally:
        _stop(stack, console, rows if not rows_printed else [], interrupted)
    if interrupted:
        return 130
    minutes, seconds = divmod(int(time.monotonic() - began), 60)
    console.print(f"{len(rows)} of {len(chosen)} scenario(s) played in {minutes} min {seconds} s")
    return 0 if rows and all(r.ok for r in rows) and len(rows) == len(chosen) else 1


def _stop(stack: Stack, console: Console, rows: list[Row], interrupted: bool) -> None:
    """The summary so far, then every process the demo started stopped — a second Ctrl-C is
    ignored meanwhile, so the clean-up is never cut short."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to guard
        previous = None
    try:
        if interrupted:
            console.print(
                "\n[yellow]interrupted (Ctrl-C)[/]: the scenario in progress is abandoned;"
                " stopping every process the demo started (Ctrl-C again is ignored) …"
            )
        if rows:
            console.print(summary_table(rows))
        console.print("stopping every process the demo started …")
        stack.stop()
        if interrupted:
            console.print("demo stopped: every process it started has exited.")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
