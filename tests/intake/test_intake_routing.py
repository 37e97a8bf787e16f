"""The routing table mirrors the runbook's Quick Reference and Key Metrics (pure, as a table)."""

from __future__ import annotations

import pytest

from intake.routes import KNOWN_FLOWS, Router, load_table, parse_table, route
from runbook.alerts import Alert, AlertStatus
from runbook.errors import ConfigurationError

pytestmark = pytest.mark.unit

TABLE = load_table()


def alert(name: str, summary: str = "", source: str = "generic", **labels: str) -> Alert:
    return Alert(
        source=source, name=name, status=AlertStatus.FIRING, summary=summary, labels=labels
    )


# (alert name, summary, source) -> route; rows from RUNBOOK.md "Quick Reference" / "Key Metrics"
ROWS = [
    # Quick Reference: High error rate
    ("HighErrorRate", "Error rate above 2%", "alertmanager", "high-error-rate"),
    ("ErrorRateWarning", "error rate 0.7% (warn >0.5%)", "generic", "high-error-rate"),
    ("API 5xx ratio", "HTTP 503 responses", "grafana", "high-error-rate"),
    ("TypeError: NoneType", "app.views in reply", "sentry", "high-error-rate"),
    ("Anything from Sentry", "", "sentry", "high-error-rate"),
    # Quick Reference: High latency / Key Metrics: P99 latency
    ("HighLatency", "P99 latency 12s", "alertmanager", "high-latency"),
    ("P99 latency", "p99 over 5s (warn)", "grafana", "high-latency"),
    ("SlowResponses", "slow responses on /chat", "generic", "high-latency"),
    ("Request timeouts", "upstream timed out", "generic", "high-latency"),
    # Quick Reference: LLM errors (and 429s)
    ("OpenAIErrors", "OpenAI API errors", "alertmanager", "llm-provider"),
    ("LLMRateLimited", "429 Too Many Requests from provider", "grafana", "llm-provider"),
    ("RateLimitError", "Error code: 429 - rate limit reached", "sentry", "llm-provider"),
    ("Quota", "insufficient_quota on gpt-4o", "generic", "llm-provider"),
    # Quick Reference: Database down / Key Metrics: DB connections
    ("PostgresqlDown", "postgres exporter reports down", "alertmanager", "database-connections"),
    ("DB connections", "DB connections >95% pool", "grafana", "database-connections"),
    ("ConnectionRefused", "psycopg: connection refused", "sentry", "database-connections"),
    ("RDS unavailable", "database unreachable", "generic", "database-connections"),
    ("Pool", "connection pool exhausted", "pagerduty", "database-connections"),
    # Quick Reference: Complete outage
    ("CompleteOutage", "All health checks failing", "generic", "complete-outage"),
    ("ApiDown", "no API responses", "alertmanager", "complete-outage"),
    ("Widget", "customer-facing widget broken", "grafana", "complete-outage"),
    ("Health", "all health checks are failing", "pagerduty", "complete-outage"),
    # Key Metrics without a remediation flow, and the unknown: triage (never dropped)
    ("AutomationRateLow", "Automation rate 58% (critical below 60%)", "generic", "triage"),
    ("EscalationRateHigh", "Escalation rate 31%", "alertmanager", "triage"),
    ("DiskAlmostFull", "node disk 91%", "alertmanager", "triage"),
]


@pytest.mark.parametrize(("name", "summary", "source", "expected"), ROWS)
def test_runbook_table_routes_alert(name: str, summary: str, source: str, expected: str) -> None:
    assert route(TABLE, alert(name, summary, source)).route == expected


def test_every_route_dispatches_its_flow_by_deployment_name() -> None:
    placement = route(TABLE, alert("HighLatency", "p99"), deployment="prod")
    assert placement.flow == "high-latency"
    assert placement.actions == (("flow", "high-latency/prod"),)


def test_triage_notifies_slack_and_starts_no_flow() -> None:
    placement = route(TABLE, alert("DiskAlmostFull"))
    assert placement.flow is None
    assert placement.actions == (("slack", ""),)


def test_explicit_runbook_label_wins_over_text() -> None:
    placed = route(TABLE, alert("HighLatency", "p99", runbook="llm-provider"))
    assert placed.route == "llm-provider"
    # an unknown name in the label falls back to matching
    assert route(TABLE, alert("HighLatency", runbook="nonsense")).route == "high-latency"


def test_incident_key_target_and_group() -> None:
    a = route(TABLE, alert("HighErrorRate", environment="staging"))
    b = route(TABLE, alert("ErrorRateWarning", source="grafana", environment="staging"))
    assert (a.route, a.target, a.group_key) == ("high-error-rate", "api", "staging")
    # two sources, two names, one problem: one incident key
    assert (a.route, a.target, a.group_key) == (b.route, b.target, b.group_key)
    # no environment label: the default group
    assert route(TABLE, alert("HighErrorRate")).group_key == "production"
    # an explicit target label separates incidents
    assert route(TABLE, alert("HighErrorRate", target="widget")).target == "widget"


def test_triage_groups_by_alert_name() -> None:
    first = route(TABLE, alert("DiskAlmostFull"))
    second = route(TABLE, alert("CertificateExpiry"))
    assert first.group_key != second.group_key


def test_complete_outage_is_never_suppressed_by_maintenance() -> None:
    assert route(TABLE, alert("CompleteOutage", "all health checks failing")).suppressible is False
    assert route(TABLE, alert("HighLatency", "p99")).suppressible is True


@pytest.mark.parametrize(
    "text",
    [
        "routes: [",
        "routes: []\n",
        "routes: []\nfallback: {name: triage}\nsurprise: 1\n",
        "routes: [{name: a, match: [{text: '('}]}]\nfallback: {name: triage}\n",
        "routes: [{name: triage}]\nfallback: {name: triage}\n",
    ],
)
def test_invalid_routing_table_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_table(text)


def test_table_from_yaml_replaces_the_bundled_one() -> None:
    table = parse_table(
        "routes:\n  - name: only\n    flow: high-latency\n    match: [{labels: {team: payments}}]\n"
        "fallback: {name: triage, notify: [slack]}\n"
    )
    assert route(table, alert("x", team="payments")).route == "only"
    assert route(table, alert("HighErrorRate")).route == "triage"


def test_router_memo_gives_the_same_placement_as_route() -> None:
    router = Router(TABLE, deployment="runbook", size=2)
    for name, summary, source, expected in ROWS * 2:
        placed = router(alert(name, summary, source))
        assert placed == route(TABLE, alert(name, summary, source))
        assert placed.route == expected
    # labels are part of the key: a different target is a different placement
    assert router(alert("HighErrorRate", target="a")).target == "a"
    assert router(alert("HighErrorRate", target="b")).target == "b"


def test_every_registered_flow_is_a_known_flow() -> None:
    """intake may not import `flows`; its own list must not drift from the registry."""
    from flows.registry import FLOWS

    assert set(FLOWS) <= KNOWN_FLOWS


def test_bundled_table_routes_only_to_known_flows() -> None:
    flows = {r.flow for r in (*TABLE.routes, TABLE.fallback) if r.flow}
    assert flows and flows <= KNOWN_FLOWS


@pytest.mark.parametrize("where", ["routes", "fallback"])
def test_route_to_an_unknown_flow_is_refused_naming_route_and_flow(where: str) -> None:
    if where == "routes":
        text = (
            "routes: [{name: disk-space, flow: disk-cleanup, match: [{text: disk}]}]\n"
            "fallback: {name: triage, notify: [slack]}\n"
        )
        route_name = "disk-space"
    else:
        text = "routes: []\nfallback: {name: catch-all, flow: disk-cleanup}\n"
        route_name = "catch-all"
    with pytest.raises(ConfigurationError) as caught:
        parse_table(text, origin="routes.yaml")
    message = str(caught.value)
    assert f"route '{route_name}' names unknown flow 'disk-cleanup'" in message
    assert "\n" not in message
