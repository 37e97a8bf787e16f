"""The key-metrics watch: the runbook's table measured from the app database and Railway, each
metric against the Policy's levels; a breach is one alert through our own intake — warnings
notify, criticals remediate. Pure tables first, then runs against the sandbox's traffic."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from blocks.policy import Policy
from flows.metrics_watch import WatchSignals, decide, metrics_watch, read, resolution, trend
from runbook import opsdb
from runbook.policy import PolicyRules, Threshold
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.flows.maintenance_support import own_intake, watch_env
from tests.intake.intake_harness import eventually, flow_runs_by_incident

__all__ = ["own_intake", "watch_env"]  # the fixtures, imported for these tests
POLICY = PolicyRules()
HEALTHY = {
    "error_rate": 0.2,
    "p99_latency": 1.4,
    "automation_rate": 83.0,
    "escalation_rate": 8.0,
    "db_connections": 30.0,
}


def signals(**values: float | None) -> WatchSignals:
    return WatchSignals(values={**HEALTHY, **values}, environment="prod")


# -- pure tables ----------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    ("metric", "value", "level"),
    [
        ("error_rate", 0.5, "ok"),  # "more than" is strict
        ("error_rate", 0.51, "warn"),
        ("error_rate", 2.01, "critical"),
        ("p99_latency", 5.0, "ok"),
        ("p99_latency", 10.5, "critical"),
        ("automation_rate", 75.0, "ok"),  # lower is worse
        ("automation_rate", 74.9, "warn"),
        ("automation_rate", 59.0, "critical"),
        ("escalation_rate", 20.5, "warn"),
        ("escalation_rate", 31.0, "critical"),
        ("db_connections", 81.0, "warn"),
        ("db_connections", 96.0, "critical"),
        ("error_rate", None, "no data"),
    ],
)
def test_each_metric_is_judged_against_the_runbooks_levels(
    metric: str, value: float | None, level: str
) -> None:
    assert read(metric, value, POLICY).level == level


@pytest.mark.unit
@pytest.mark.parametrize(
    ("values", "act", "route", "severity"),
    [
        ({}, "none", None, None),
        ({"error_rate": 18.0}, "remediate", "high-error-rate", "critical"),
        ({"p99_latency": 12.0}, "remediate", "high-latency", "critical"),
        (
            {"db_connections": 97.0, "error_rate": 9.0},
            "remediate",
            "database-connections",
            "critical",
        ),
        # a bad deploy: errors critical, escalation and automation only warn → one alert, §1
        (
            {"error_rate": 18.0, "escalation_rate": 26.0, "automation_rate": 68.0},
            "remediate",
            "high-error-rate",
            "critical",
        ),
        ({"automation_rate": 50.0}, "notify", "key-metrics", "critical"),
        ({"escalation_rate": 24.0}, "notify", "key-metrics", "warning"),
        ({"error_rate": 1.0, "p99_latency": 6.0}, "notify", "key-metrics", "warning"),
    ],
)
def test_a_breach_is_one_alert_routed_to_what_remediates_it_else_notified(
    values: dict[str, float], act: str, route: str | None, severity: str | None
) -> None:
    d = decide(signals(**values), POLICY)
    assert d.act == act
    if route is None:
        assert d.alert is None
        return
    assert d.alert is not None
    assert d.alert["labels"]["runbook"] == route
    assert d.alert["severity"] == severity
    assert d.alert["dedup_key"] == f"metrics-watch:{route}"  # the same key every minute
    for metric in values:
        assert metric.replace("_", " ").split()[0] in d.alert["summary"].lower()


@pytest.mark.unit
def test_a_source_that_cannot_be_read_is_reported_never_ok() -> None:
    s = WatchSignals(
        values=dict.fromkeys(HEALTHY), unavailable={"app database": "connection refused"}
    )
    d = decide(s, POLICY)
    assert d.act == "notify" and d.alert is not None
    assert "app database unreadable" in d.alert["summary"]
    assert {r.level for r in d.readings} == {"no data"}


@pytest.mark.unit
def test_a_breach_that_ended_or_moved_is_sent_resolved_once() -> None:
    firing = decide(signals(error_rate=9.0), POLICY).alert
    warned = decide(signals(escalation_rate=24.0), POLICY).alert
    assert resolution(None, firing) == {}
    assert resolution(firing, firing) == {}  # still breached: it keeps firing
    ended = resolution(firing, None)
    assert ended["status"] == "resolved" and ended["dedup_key"] == "metrics-watch:high-error-rate"
    moved = resolution(firing, warned)
    assert moved["labels"]["runbook"] == "high-error-rate" and moved["status"] == "resolved"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("now", "before", "shown"),
    [
        (1.5, 1.0, "↑ +0.5"),
        (1.0, 1.5, "↓ -0.5"),
        (2.0, 2.0, "→ 0"),
        (None, 1.0, "—"),
        (1.0, None, "—"),
    ],
)
def test_the_trend_is_the_change_since_the_previous_run(
    now: float | None, before: float | None, shown: str
) -> None:
    assert trend(now, before) == shown


# -- against the sandbox's traffic ----------------------------------------------------------
async def _outcomes(sb: SandboxHandle, until: datetime, window_s: int) -> dict[str, int]:
    """A hand count of the conversations the sandbox's traffic wrote in the window."""
    async with await psycopg.AsyncConnection.connect(sb.env["RUNBOOK_APP_DATABASE_URL"]) as conn:
        cur = await conn.execute(
            "SELECT status, resolved_by FROM conversations"
            " WHERE updated_at > %s AND updated_at <= %s",
            (until - timedelta(seconds=window_s), until),
        )
        rows = await cur.fetchall()
    decided = [(status, by) for status, by in rows if status in ("resolved", "escalated")]
    return {
        "outcomes": len(decided),
        "ai_resolved": sum(1 for status, by in decided if status == "resolved" and by == "ai"),
        "escalated": sum(1 for status, _ in decided if status == "escalated"),
    }


async def _artifact_rows(flow_run_id: Any) -> list[dict[str, Any]]:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["key-metrics"])),
            limit=50,
        )
    mine = [a for a in found if a.flow_run_id == flow_run_id]
    assert len(mine) == 1
    data = mine[0].data
    rows: list[dict[str, Any]] = data if isinstance(data, list) else json.loads(str(data))
    return rows


@pytest.mark.integration
async def test_automation_and_escalation_rates_equal_a_hand_count_of_the_conversations(
    prefect_server: str, watch_env: SandboxHandle
) -> None:
    sb = watch_env
    # A window with enough conversations to make the rates meaningful: on a loaded machine the
    # sandbox's traffic can fall behind its ~8 chats/s, so wait (poll) until a closed window
    # holds at least 10 outcomes instead of assuming it does.
    deadline = time.monotonic() + 60
    while True:
        until = datetime.now(UTC) - timedelta(seconds=2)  # every row of the window is written
        if (await _outcomes(sb, until, 60))["outcomes"] >= 10 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    state = await metrics_watch(window_s=60, until=until, return_state=True)
    result = await state.result()
    counted = await _outcomes(sb, until, 60)
    assert counted["outcomes"] >= 10, counted  # the sandbox's traffic (and its seeded hour)
    assert {k: result.counts[k] for k in counted} == counted
    automation = round(100 * counted["ai_resolved"] / counted["outcomes"], 2)
    escalation = round(100 * counted["escalated"] / counted["outcomes"], 2)
    assert result.reading("automation_rate").value == automation
    assert result.reading("escalation_rate").value == escalation
    rows = await _artifact_rows(state.state_details.flow_run_id)
    assert [r["metric"] for r in rows] == [
        "Error rate",
        "P99 latency",
        "Automation rate",
        "Escalation rate",
        "DB connections",
    ]
    assert rows[2]["warning"] == "< 75" and rows[2]["critical"] == "< 60"
    again = await metrics_watch(window_s=60, until=until)  # same window: no change
    assert again.reading("automation_rate").trend == "→ 0"


async def _incidents(environment: str) -> list[dict[str, Any]]:
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT id::text, route, flow, status, alert_count FROM runbook.incidents"
            " WHERE group_key = %s ORDER BY opened_at",
            (environment,),
        )
        rows = await cur.fetchall()
    return [dict(zip(("id", "route", "flow", "status", "alerts"), r, strict=True)) for r in rows]


@pytest.mark.integration
async def test_an_injected_breach_opens_exactly_one_incident_through_the_intake(
    prefect_server: str, watch_env: SandboxHandle
) -> None:
    sb = watch_env
    sb.inject("bad-deploy")  # ~18 % of chats fail: errors, escalations, less automation
    await asyncio.sleep(4.5)
    first = await metrics_watch(window_s=4)
    second = await metrics_watch(window_s=4)  # a minute later: the same breach
    assert first.act == second.act == "remediate", first.why
    assert first.reading("error_rate").level == "critical"
    found = await _incidents(get_settings().environment)
    assert len(found) == 1, found  # one incident, however many metrics and runs
    assert found[0]["route"] == "high-error-rate" and found[0]["alerts"] == 2
    api = f"{prefect_server}/api"

    async def remediation_started() -> bool:
        return (await flow_runs_by_incident(api)).get(found[0]["id"], 0) == 1

    await eventually(remediation_started, timeout=15)


@pytest.mark.integration
async def test_a_warning_notifies_slack_and_starts_no_remediation(
    prefect_server: str, watch_env: SandboxHandle
) -> None:
    sb = watch_env
    # this environment's Policy: the bad deploy's errors are only a warning here
    await Policy(
        thresholds={
            **PolicyRules().thresholds,
            "error_rate_pct": Threshold(warn=0.5, critical=60.0),
            "escalation_rate_pct": Threshold(warn=20.0, critical=90.0),
            "automation_rate_pct": Threshold(warn=75.0, critical=5.0, higher_is_worse=False),
        }
    ).asave(get_settings().environment, overwrite=True)
    slack_before = len(sb.sink("slack"))
    sb.inject("bad-deploy")
    await asyncio.sleep(4.5)
    result = await metrics_watch(window_s=4)
    assert result.act == "notify", result.why
    assert result.reading("error_rate").level == "warn"
    found = await _incidents(get_settings().environment)
    assert [(i["route"], i["flow"]) for i in found] == [("key-metrics", None)]

    async def slack_told() -> bool:
        texts = [str(m.get("text", "")) for m in sb.sink("slack")[slack_before:]]
        return any("KeyMetricsWarning" in t and found[0]["id"] in t for t in texts)

    await eventually(slack_told, timeout=15)
    assert found[0]["id"] not in await flow_runs_by_incident(f"{prefect_server}/api")
