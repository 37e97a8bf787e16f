"""End to end per flow: fault → real-format alert → intake → served flow → journal, Slack.

One stack for the module: a local Prefect server, the sandbox, the intake and `runbook serve`
(the same `Stack` the demo uses), all real processes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.registry import FLOWS
from runbook.cli.demo import (
    SCENARIOS,
    Row,
    Scenario,
    _code,
    _events,
    _waiting_gate,
    alertmanager_payload,
    run_scenario,
)
from runbook.settings import get_settings
from sandbox.local.stack import Stack

pytestmark = pytest.mark.e2e

BY_NAME = {s.name: s for s in SCENARIOS}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    saved = dict(os.environ)
    st = Stack(Path(tempfile.mkdtemp(prefix="runbook-e2e-")), flows=len(FLOWS), ui=False)
    try:
        st.start(say=lambda _m: None)
        get_settings.cache_clear()  # the stack's environment is now the process's
        assert st.server is not None
        with temporary_settings(updates={PREFECT_API_URL: st.server.api_url}):
            yield st
    finally:
        st.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def runbook_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `runbook` command, as an operator runs it (same environment as the stack)."""
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", *args],
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def journal_ops(st: Stack, operation: str) -> int:
    return sum(1 for e in st.sandbox.journal() if e["operation"] == operation)


async def scenario(st: Stack, s: Scenario, **kw: Any) -> Row:
    kw.setdefault("auto_approve", True)
    return await run_scenario(
        st,
        s,
        fault_wait_s=kw.pop("fault_wait_s", 12.0),
        timeout_s=180.0,
        say=lambda _m: None,
        **kw,
    )


def slack_summary(st: Stack, incident: str) -> str:
    """The flow's closing Slack summary (it follows the timeline's last line by a moment)."""
    import time

    for _ in range(40):
        texts = [str(m.get("text", "")) for m in st.sandbox.sink("slack")]
        found = [t for t in texts if incident in t and "Timeline: " in t]
        if found:
            assert "/v2/runs/flow-run/" in found[-1], "the summary links to the run"
            return found[-1]
        time.sleep(0.25)
    raise AssertionError(f"no Slack summary with a UI link for {incident}")


async def test_integration_outage_changes_nothing_and_reports_status_page(stack: Stack) -> None:
    journal_before = len(stack.sandbox.journal())
    row = await scenario(stack, BY_NAME["integration-outage"])
    assert row.ok, row.problem
    assert len(stack.sandbox.journal()) == journal_before, "no platform change"
    assert "integration" in row.decision, row.decision
    assert "shopify" in slack_summary(stack, row.incident).lower(), "Slack names the outage"


@pytest.mark.parametrize(
    ("name", "operation"),
    [
        ("llm-outage", "variableCollectionUpsert"),
        ("llm-rate-limit", "variableCollectionUpsert"),
        ("high-load", "environmentPatchCommit"),
    ],
)
async def test_safe_remediation_acts_once_verifies_and_reports(
    stack: Stack, name: str, operation: str
) -> None:
    before = journal_ops(stack, operation)
    row = await scenario(stack, BY_NAME[name])
    assert row.ok, row.problem
    assert row.verified is True
    assert journal_ops(stack, operation) == before + 1, "the action ran exactly once"
    assert "gpt-4o-mini" in slack_summary(stack, row.incident) or name == "high-load"


async def test_slow_queries_are_database_bound_and_reported_not_scaled(stack: Stack) -> None:
    slow = Scenario(
        name="slow-queries",
        fault="slow-queries",
        alert="HighLatency",
        summary="P99 latency above 10s for 5 minutes",
        flow="high-latency",
        decision="report_slow_queries",
        action=None,
    )
    journal_before = len(stack.sandbox.journal())
    row = await scenario(stack, slow)
    assert row.ok, row.problem
    assert row.decision.startswith("database-bound")
    assert len(stack.sandbox.journal()) == journal_before, "no scaling for a database problem"
    assert "slow-query report" in slack_summary(stack, row.incident).lower()


async def test_bad_deploy_waits_for_approval_then_rolls_back_once(stack: Stack) -> None:
    s = BY_NAME["bad-deploy"]
    sb = stack.sandbox
    before = journal_ops(stack, "deploymentRollback")
    sb.reset()
    sb.inject(s.fault)
    await asyncio.sleep(20)
    started = datetime.now(UTC)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{stack.intake_url}/alerts/alertmanager",
            json=alertmanager_payload(s, "firing", started, uuid.uuid4().hex[:16]),
            headers={"Authorization": f"Bearer {stack.alert_token}"},
        )
    assert answer.status_code == 202
    incident = answer.json()["incident"]
    gate, seen = None, []
    for _ in range(240):
        await asyncio.sleep(0.5)
        seen = [f"{e['kind']}: {e['summary']}" for e in await _events(incident, 0)]
        assert not any(x.startswith("finished") for x in seen), f"finished without asking: {seen}"
        gate = await _waiting_gate(incident)
        if gate:
            break
    assert gate, f"the rollback never asked for approval: {seen}"
    await asyncio.sleep(3)
    assert journal_ops(stack, "deploymentRollback") == before, "no action before approval"
    async with get_client() as client:
        for _ in range(120):  # the request is recorded just before the run suspends
            waiting = await client.read_flow_run(uuid.UUID(gate))
            if waiting.state is not None and waiting.state.is_paused():
                break
            await asyncio.sleep(0.25)
    assert waiting.deployment_id is not None and waiting.parent_task_run_id is None
    assert waiting.state is not None and waiting.state.name == "Suspended", (
        "the alert's deployment run suspends itself while it waits (no process held)"
    )
    listing = runbook_cli("approvals")
    assert listing.returncode == 0, listing.stderr
    assert gate in listing.stdout and "rollback_deployment" in listing.stdout
    code = _code(sb, "oncall", gate)
    assert code
    approve = runbook_cli(
        "approve", gate, "--approver", "oncall", "--code", code, "--reason", "e2e: bad deploy"
    )
    assert approve.returncode == 0, approve.stderr
    for _ in range(240):
        events = await _events(incident, 0)
        if any(e["kind"] == "finished" for e in events):
            break
        await asyncio.sleep(0.5)
    finished = [e["summary"] for e in events if e["kind"] == "finished"]
    assert finished and finished[-1].startswith("rollback (verified)"), finished
    assert journal_ops(stack, "deploymentRollback") == before + 1
    assert "approved by oncall" in " ".join(e["summary"] for e in events)
    assert "rolled back" in slack_summary(stack, incident)
    again = runbook_cli(
        "approve", gate, "--approver", "oncall", "--code", code, "--reason", "double click"
    )
    assert again.returncode == 1 and "not waiting for approval" in again.stderr
    assert "Traceback" not in again.stderr
    assert journal_ops(stack, "deploymentRollback") == before + 1


@pytest.mark.parametrize(
    ("fault", "flow"),
    [
        ("bad-deploy", "high-error-rate"),
        ("llm-outage", "high-error-rate"),
        ("high-load", "high-latency"),
        ("llm-rate-limit", "llm-provider"),
    ],
)
def test_dry_run_of_each_flow_changes_nothing(stack: Stack, fault: str, flow: str) -> None:
    stack.sandbox.reset()
    stack.sandbox.inject(fault)
    import time

    # the flows decide on the Policy's recent window (30 s): a bad deploy fails 18 % of chats, so
    # it needs ~20 s of it in the window to be clearly above the 5 % rollback line
    time.sleep(20 if fault == "bad-deploy" else 10)
    journal_before = len(stack.sandbox.journal())
    result = runbook_cli("run", flow, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout
    assert '"dry_run": true' in result.stdout
    assert '"action_status": "planned"' in result.stdout, "the dry run planned an act"
    assert len(stack.sandbox.journal()) == journal_before, "dry run changed the platform"


async def test_restore_switches_back_once_primary_is_healthy(stack: Stack) -> None:
    from flows.llm_provider import llm_provider

    sb = stack.sandbox
    sb.reset()
    sb.inject("llm-outage")
    first = await llm_provider()
    assert first.action == "switch_model" and first.action_status == "done"
    assert sb.state()["DEFAULT_MODEL"] == "gpt-4o-mini"
    sb.clear()
    restored = await llm_provider(restore_healthy_s=3)
    assert restored.decision == "restore"
    assert restored.action == "restore_model" and restored.action_status == "done"
    last = [e for e in sb.journal() if e["operation"] == "variableCollectionUpsert"][-1]
    assert last["args"]["variables"] == {"DEFAULT_MODEL": "gpt-4o"}
    assert sb.state()["DEFAULT_MODEL"] == "gpt-4o"


async def test_critical_health_check_opens_one_incident_through_the_intake(stack: Stack) -> None:
    """A critical health check is an alert like any other: signed, posted to the intake,
    coalesced (two runs, one incident) — not a side channel."""
    import psycopg

    from flows.health import health_check

    sb = stack.sandbox
    sb.reset()
    sb.inject("complete-outage")
    try:
        first = await health_check()
        second = await health_check()
    finally:
        sb.reset()
    assert first.status.value == "critical" and second.status.value == "critical"
    url = os.environ["RUNBOOK_OPS_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT i.id, count(a.id) FROM runbook.incidents i JOIN runbook.alerts a"
            " ON a.incident_id = i.id WHERE a.name = 'HealthCheckCritical'"
            " AND a.source = 'generic' GROUP BY i.id"
        ).fetchall()
    assert len(rows) == 1, rows
    assert rows[0][1] == 2, "both runs' alerts reached the one incident"


OUTAGE = Scenario(
    name="complete-outage",
    fault="complete-outage",
    alert="CompleteOutage",
    summary="All health checks failing",
    flow="complete-outage",
    decision="rollback",
    action="rollback_deployment",
    approval=True,
)


async def post_alert(st: Stack, s: Scenario, status: str = "firing") -> str:
    """A real Alertmanager delivery to the intake; returns the incident it opened (or closed:
    one fingerprint per scenario, so "resolved" closes what "firing" opened)."""
    fingerprint = f"e2e-{s.name}"
    payload = alertmanager_payload(s, status, datetime.now(UTC), fingerprint)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{st.intake_url}/alerts/alertmanager",
            json=payload,
            headers={"Authorization": f"Bearer {st.alert_token}"},
        )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["route"] == s.flow, body
    return str(body["incident"])


async def approve_when_asked(st: Stack, incident: str, approver: str) -> str:
    """Wait until the incident's run waits for `approver`'s code, then approve with the CLI."""
    for _ in range(360):
        gate = await _waiting_gate(incident)
        code = _code(st.sandbox, approver, gate) if gate else None
        if gate and code:
            done = runbook_cli(
                "approve", gate, "--approver", approver, "--code", code, "--reason", "outage"
            )
            if done.returncode == 0:
                return gate
        await asyncio.sleep(0.5)
    raise AssertionError(f"{approver} was never asked to approve {incident}")


async def finished(incident: str) -> list[dict[str, Any]]:
    for _ in range(480):
        events = await _events(incident, 0)
        if any(e["kind"] == "finished" for e in events):
            return events
        await asyncio.sleep(0.5)
    raise AssertionError(f"incident {incident} never finished")


async def test_complete_outage_after_a_bad_deploy_rolls_back_after_two_approvers(
    stack: Stack,
) -> None:
    """§5 through the intake: customers told, nothing before the second approver, the
    emergency rollback, health back, status page and PagerDuty resolved."""
    sb = stack.sandbox
    sb.reset()
    sb.inject("complete-outage")
    before = journal_ops(stack, "deploymentRollback")
    pages_before, status_before = len(sb.sink("pagerduty")), len(sb.sink("statuspage"))
    incident = await post_alert(stack, OUTAGE)
    await approve_when_asked(stack, incident, "oncall")
    created = [e for e in sb.sink("statuspage")[status_before:] if e["action"] == "create"]
    assert len(created) == 1, "customers told once, even across the reruns"
    for _ in range(20):  # the run reruns and asks the second person; nothing happens meanwhile
        await asyncio.sleep(0.5)
        assert journal_ops(stack, "deploymentRollback") == before, "one approver is not enough"
    await approve_when_asked(stack, incident, "lead")
    events = await finished(incident)
    summaries = " ".join(e["summary"] for e in events)
    assert journal_ops(stack, "deploymentRollback") == before + 1
    assert "approved by oncall, lead" in summaries
    assert [e["kind"] for e in events if e["kind"] == "finished"], summaries
    final = [e["summary"] for e in events if e["kind"] == "finished"][-1]
    assert final.startswith("rollback (verified)"), final
    identified = [
        e for e in sb.sink("statuspage")[status_before:] if e.get("status") == "identified"
    ]
    assert len(identified) == 1, "customers told the cause once"
    updates = [e for e in sb.sink("statuspage")[status_before:] if e.get("status") == "resolved"]
    assert updates, "the status page incident was resolved"
    assert updates[-1]["components"] == {
        "cmp-assistant": "operational",
        "cmp-widget": "operational",
    }, "components back to operational"
    pd = sb.sink("pagerduty")[pages_before:]
    triggers = [p for p in pd if p["event_action"] == "trigger" and p["dedup_key"] == incident]
    assert triggers and triggers[0]["payload"]["severity"] == "critical"
    assert any(p["event_action"] == "resolve" and p["dedup_key"] == incident for p in pd)
    await post_alert(stack, OUTAGE, "resolved")  # Alertmanager sees it fixed: closes it
    sb.reset()


@pytest.mark.parametrize("dns_fault", ["dns-nxdomain", "dns-servfail"])
async def test_complete_outage_from_dns_changes_nothing_and_escalates_to_railway_support(
    stack: Stack, dns_fault: str
) -> None:
    sb = stack.sandbox
    sb.reset()
    sb.inject("complete-outage")
    sb.inject(dns_fault)
    journal_before = len(sb.journal())
    pages_before, mail_before = len(sb.sink("pagerduty")), len(sb.sink("email"))
    status_before = len(sb.sink("statuspage"))
    incident = await post_alert(stack, OUTAGE)
    events = await finished(incident)
    decided = [e["summary"] for e in events if e["kind"] == "decided"]
    assert decided and decided[-1].startswith("dns-failure → escalate"), decided
    platform = [e for e in sb.journal()[journal_before:] if e["system"] != "statuspage"]
    assert platform == [], "no platform mutation (only the customer status page)"
    assert [e for e in sb.sink("statuspage")[status_before:] if e["action"] == "create"]
    pages = [str(p) for p in sb.sink("pagerduty")[pages_before:]]
    assert any("Railway" in p for p in pages), "the page names the Railway support contact"
    mail = sb.sink("email")[mail_before:]
    assert any("Railway" in m["subject"] and "api.example.com" in m["body"] for m in mail)
    from sandbox.environment import SECRETS

    for message in mail:
        assert not any(secret in message["body"] for secret in SECRETS.values())
    await post_alert(stack, OUTAGE, "resolved")
    sb.reset()


def test_the_printed_approve_line_works_in_another_shell(stack: Stack) -> None:
    """The demo's `. <home>/demo.env && runbook …` line, in a shell that has none of the
    stack's environment, reaches the running stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    demo_env = stack.home / "demo.env"
    assert demo_env.exists()
    result = subprocess.run(
        ["bash", "-c", f". {demo_env} && {sys.executable} -m runbook.cli approvals"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
