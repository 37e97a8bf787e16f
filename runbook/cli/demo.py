"""`runbook demo`: inject each scenario's fault into the sandbox, post a real-format alert to the
intake, and watch the served flow diagnose, ask, act and verify; end with a summary table.

Exit 0 only if every scenario ended as expected.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from psycopg.rows import dict_row
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from runbook import approvals, opsdb
from runbook.settings import get_settings
from sandbox.local.stack import Stack


class Scenario(BaseModel):
    name: str
    section: str = ""  # the runbook section it plays
    fault: str
    fault_target: str | None = None
    alert: str
    summary: str
    flow: str
    decision: str  # the act the flow must choose
    action: str | None  # the ledger action expected "done", None = no platform change
    approval: bool = False


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
        approval=True,
    ),
    Scenario(
        name="integration-outage",
        section="§1 High Error Rate (Shopify down → notify)",
        fault="integration-outage",
        fault_target="shopify",
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
        alert="LLMErrors",
        summary="OpenAI API errors (503) on the primary model",
        flow="llm-provider",
        decision="fallback",
        action="switch_model",
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


async def _waiting_gate(incident: str) -> str | None:
    async with await opsdb.connect() as conn:
        waiting = await approvals.waiting(conn)
    return next((w.flow_run_id for w in waiting if w.incident_id == incident), None)


def _code(sandbox: Any, approver: str, run_id: str) -> str | None:
    for message in reversed(sandbox.sink("slack")):
        text = str(message.get("text", ""))
        if text.startswith(f"{approver}:") and run_id in text:
            found = re.search(r"\bis (\d{8})\b", text)
            return found.group(1) if found else None
    return None


async def _approve(run_id: str, code: str, timeout_s: float = 60.0) -> bool:
    """Resume the waiting run with the code, once it is actually paused/suspended (the approval
    row and the codes go out just before the run stops); True once Prefect accepted it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while time.monotonic() < deadline:
            run = await client.read_flow_run(uuid.UUID(run_id))
            if run.state is not None and run.state.is_paused():
                result = await client.resume_flow_run(
                    uuid.UUID(run_id),
                    run_input={
                        "approve": True,
                        "approver": "oncall",
                        "code": code,
                        "reason": "demo --auto-approve",
                    },
                )
                if result.status == SetStateStatus.ACCEPT:
                    return True
            await asyncio.sleep(0.5)
    return False


async def _summarise(row: Row, s: Scenario, alert_at: float) -> Row:
    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT kind, summary, at FROM runbook.action_events WHERE incident_id = %s"
            " ORDER BY id",
            (row.incident,),
        )
        events = await cur.fetchall()
        await cur.execute(
            "SELECT action, status, approvers FROM runbook.actions WHERE incident_id = %s"
            " ORDER BY created_at",
            (row.incident,),
        )
        actions = await cur.fetchall()
    decided = [e["summary"] for e in events if e["kind"] == "decided"]
    row.decision = decided[-1].split(":")[0] if decided else "?"
    done = [e for e in events if e["kind"] == "done"]
    if done:
        row.seconds_to_action = round(done[0]["at"].timestamp() - alert_at, 1)
    if actions:
        first = actions[0]
        row.action = f"{first['action']} ({first['status']})"
        row.approver = ", ".join(first["approvers"])
    for e in events:
        if e["kind"] == "finished":
            text = e["summary"]
            row.verified = (
                False if "(NOT verified)" in text else True if "(verified)" in text else None
            )
    problems = []
    if f"→ {s.decision}" not in row.decision:
        problems.append(f"decision {row.decision!r}, expected {s.decision}")
    if s.action and not any(a["action"] == s.action and a["status"] == "done" for a in actions):
        problems.append(f"{s.action} not done")
    if not s.action and actions:
        problems.append("acted although no platform change was expected")
    if s.action and row.verified is not True:
        problems.append("not verified")
    if s.approval and not row.approver:
        problems.append("acted without an approver")
    row.problem = "; ".join(problems)
    row.ok = not problems
    return row


async def run_scenario(
    stack: Stack,
    s: Scenario,
    *,
    auto_approve: bool,
    fault_wait_s: float,
    timeout_s: float,
    say: Any,
) -> Row:
    sb = stack.sandbox
    sb.reset()
    sb.inject(s.fault, target=s.fault_target)
    say(
        f"\n[bold]▶ {s.name}[/]: injected [cyan]{s.fault}[/]; letting the symptoms build "
        f"for {fault_wait_s:g} s …"
    )
    await asyncio.sleep(fault_wait_s)
    started = datetime.now(UTC)
    fingerprint = uuid.uuid4().hex[:16]
    headers = {"Authorization": f"Bearer {stack.alert_token}"}
    async with httpx.AsyncClient(timeout=10) as client:
        alert_at = time.time()
        answer = await client.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(s, "firing", started, fingerprint),
            headers=headers,
        )
    body = answer.json()
    row = Row(
        scenario=s.name,
        section=s.section,
        incident=str(body.get("incident") or ""),
        flow=str(body.get("route") or ""),
    )
    say(
        f"  alert {s.alert} → intake {answer.status_code} {body.get('status')} "
        f"→ route [bold]{row.flow}[/], incident {row.incident}"
    )
    if answer.status_code != 202 or not row.incident:
        row.problem = f"intake answered {answer.status_code}: {body}"
        return row
    last_event, approved, deadline = 0, False, time.monotonic() + timeout_s
    finished = False
    while time.monotonic() < deadline and not finished:
        for e in await _events(row.incident, last_event):
            last_event = e["id"]
            say(f"  {e['at']:%H:%M:%S} [magenta]{e['kind']:>9}[/] {e['summary']}")
            finished = finished or e["kind"] == "finished"
        gate = None if approved else await _waiting_gate(row.incident)
        if gate:
            code = _code(sb, "oncall", gate)
            link = f"{stack.server.url}/v2/runs/flow-run/{gate}" if stack.server else gate
            say(
                f"  [yellow]approval needed[/]: open {link} → Resume, approver [bold]oncall[/],"
                f" code [bold]{code}[/]  (or, in another shell: . {stack.home}/demo.env &&"
                f" runbook approve {gate} --approver oncall --code {code} --reason 'bad deploy')"
            )
            if auto_approve and code:
                await asyncio.sleep(2)  # let a watching human see the request first
                if await _approve(gate, code):
                    say("  [green]approved through the API (--auto-approve)[/]")
                else:
                    say("  [red]could not resume the waiting run[/]")
            approved = True
        await asyncio.sleep(0.5)
    if not finished:
        row.problem = f"the flow did not finish within {timeout_s:g} s"
    row = await _summarise(row, s, alert_at)
    async with httpx.AsyncClient(timeout=10) as client:  # the alert clears: close the incident
        await client.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(s, "resolved", started, fingerprint),
            headers=headers,
        )
    return row


def summary_table(rows: list[Row]) -> Table:
    table = Table(title="Demo summary", title_justify="left")
    for col in (
        "scenario",
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
            r.incident[:8],
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
    """`runbook demo --list`: each scenario and the runbook section it plays."""
    table = Table(title="Demo scenarios", title_justify="left")
    for col in ("scenario", "runbook section", "flow", "approval"):
        table.add_column(col)
    for s in SCENARIOS:
        table.add_row(s.name, s.section, s.flow, "yes" if s.approval else "-")
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
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=160)
    chosen = choose([scenario] if isinstance(scenario, str) else scenario)
    from flows.registry import FLOWS

    stack = Stack(home, flows=len(FLOWS))
    rows: list[Row] = []
    rows_printed = False
    try:
        stack.start(say=lambda m: console.print(m, highlight=False))
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
                        say=lambda m: console.print(m, highlight=False),
                    )
                )
                rows.append(row)
        if keep and stack.server is not None:
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
    finally:
        if rows and not rows_printed:
            console.print(summary_table(rows))
        console.print("stopping every process the demo started …")
        stack.stop()
    return 0 if rows and all(r.ok for r in rows) and len(rows) == len(chosen) else 1
