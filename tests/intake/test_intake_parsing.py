"""Real-format payloads of every source parse into `Alert`s and land on the right route."""

from __future__ import annotations

from typing import Any

import pytest
from intake_harness import fixture_payload

from intake.parsers import PARSERS, ShapeError
from intake.routes import load_table, route
from runbook.alerts import AlertStatus, Severity

pytestmark = pytest.mark.unit

TABLE = load_table()

# fixture, headers, expected (route, status, severity, name)
CASES: list[tuple[str, str, dict[str, str], tuple[str, AlertStatus, Severity, str]]] = [
    ("alertmanager", "alertmanager_firing", {},
     ("high-error-rate", AlertStatus.FIRING, Severity.CRITICAL, "HighErrorRate")),
    ("alertmanager", "alertmanager_resolved", {},
     ("high-error-rate", AlertStatus.RESOLVED, Severity.CRITICAL, "HighErrorRate")),
    ("alertmanager", "alertmanager_truncated", {},
     ("database-connections", AlertStatus.FIRING, Severity.WARNING,
      "PostgresqlTooManyConnections")),
    ("grafana", "grafana_firing", {},
     ("high-latency", AlertStatus.FIRING, Severity.CRITICAL, "P99 latency")),
    ("grafana", "grafana_resolved", {},
     ("high-latency", AlertStatus.RESOLVED, Severity.CRITICAL, "P99 latency")),
    ("sentry", "sentry_metric_alert", {"sentry-hook-resource": "metric_alert"},
     ("high-error-rate", AlertStatus.FIRING, Severity.CRITICAL,
      "Critical: Failure rate above 1% on support-api")),
    ("sentry", "sentry_metric_alert_resolved", {"sentry-hook-resource": "metric_alert"},
     ("high-error-rate", AlertStatus.RESOLVED, Severity.WARNING,
      "Resolved: Failure rate above 1% on support-api")),
    ("sentry", "sentry_event_alert", {"sentry-hook-resource": "event_alert"},
     ("llm-provider", AlertStatus.FIRING, Severity.ERROR, "OpenAI errors in support-api")),
    ("sentry", "sentry_issue", {"sentry-hook-resource": "issue"},
     ("high-error-rate", AlertStatus.FIRING, Severity.ERROR, "KeyError: 'order_id'")),
    ("pagerduty", "pagerduty_incident_triggered", {"x-webhook-id": "wh-1"},
     ("database-connections", AlertStatus.FIRING, Severity.CRITICAL,
      "Database connection pool exhausted on support-api")),
    ("pagerduty", "pagerduty_incident_resolved", {},
     ("database-connections", AlertStatus.RESOLVED, Severity.CRITICAL,
      "Database connection pool exhausted on support-api")),
    ("generic", "generic_firing", {},
     ("complete-outage", AlertStatus.FIRING, Severity.CRITICAL, "CompleteOutage")),
    ("generic", "generic_resolved", {},
     ("complete-outage", AlertStatus.RESOLVED, Severity.CRITICAL, "CompleteOutage")),
    ("generic", "generic_unmatched", {},
     ("triage", AlertStatus.FIRING, Severity.WARNING, "AutomationRateLow")),
]  # fmt: skip


@pytest.mark.parametrize(("source", "fixture", "headers", "expected"), CASES,
                         ids=[c[1] for c in CASES])  # fmt: skip
def test_real_format_fixture_parses_and_routes(
    source: str, fixture: str, headers: dict[str, str], expected: tuple[Any, ...]
) -> None:
    parsed = PARSERS[source](fixture_payload(fixture), headers)
    assert parsed.alerts, parsed.ignored
    alert = parsed.alerts[0]
    placement = route(TABLE, alert)
    assert (placement.route, alert.status, alert.severity, alert.name) == expected
    assert alert.source == source


def test_alertmanager_truncated_alerts_reports_count_and_keeps_each_alert() -> None:
    parsed = PARSERS["alertmanager"](fixture_payload("alertmanager_truncated"), {})
    assert parsed.truncated == 7
    assert [a.fingerprint for a in parsed.alerts] == ["aa01", "aa02"]
    assert [a.severity for a in parsed.alerts] == [Severity.WARNING, Severity.CRITICAL]
    # both alerts are the same problem: one incident key
    keys = {(p.route, p.target, p.group_key) for p in (route(TABLE, a) for a in parsed.alerts)}
    assert keys == {("database-connections", "postgres", "production")}


def test_alertmanager_firing_has_no_fake_start_and_end_times() -> None:
    alert = PARSERS["alertmanager"](fixture_payload("alertmanager_firing"), {}).alerts[0]
    assert alert.starts_at is not None and alert.starts_at.year == 2026
    assert alert.summary == "Error rate above 2% for 5 minutes"
    assert alert.labels["job"] == "support-api"


def test_grafana_alert_links_to_dashboard() -> None:
    alert = PARSERS["grafana"](fixture_payload("grafana_firing"), {}).alerts[0]
    assert alert.url == "https://grafana.example.com/d/support-agent?orgId=1"
    assert alert.summary == "P99 latency is 12.4s (threshold 10s)"


def test_pagerduty_delivery_id_is_the_webhook_id() -> None:
    parsed = PARSERS["pagerduty"](
        fixture_payload("pagerduty_incident_triggered"), {"x-webhook-id": "wh-42"}
    )
    assert parsed.alerts[0].delivery_id == "wh-42"
    assert parsed.alerts[0].labels["service"] == "support-api"


@pytest.mark.parametrize(
    ("source", "fixture", "headers"),
    [
        ("pagerduty", "pagerduty_incident_acknowledged", {}),
        ("sentry", "sentry_issue", {"sentry-hook-resource": "installation"}),
    ],
)
def test_deliveries_that_are_not_alerts_are_ignored(
    source: str, fixture: str, headers: dict[str, str]
) -> None:
    parsed = PARSERS[source](fixture_payload(fixture), headers)
    assert parsed.alerts == ()
    assert parsed.ignored


def _without(payload: dict[str, Any], *path: str | int) -> dict[str, Any]:
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return payload


def _set(payload: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


WRONG_SHAPES = [
    ("alertmanager", _without(fixture_payload("alertmanager_firing"), "alerts"), {}, "alerts"),
    ("alertmanager", _set(fixture_payload("alertmanager_firing"), "x", "alerts"), {}, "alerts"),
    ("alertmanager", _set(fixture_payload("alertmanager_firing"), "burning", "alerts", 0,
                          "status"), {}, "alerts.0.status"),
    ("alertmanager", _set(fixture_payload("alertmanager_firing"), ["a"], "alerts", 0, "labels"),
     {}, "alerts.0.labels"),
    ("grafana", _set(fixture_payload("grafana_firing"), "soon", "alerts", 0, "startsAt"), {},
     "alerts.0.startsAt"),
    ("sentry", _without(fixture_payload("sentry_metric_alert"), "data", "metric_alert"),
     {"sentry-hook-resource": "metric_alert"}, "data.metric_alert"),
    ("sentry", fixture_payload("sentry_issue"), {}, "Sentry-Hook-Resource"),
    ("pagerduty", _without(fixture_payload("pagerduty_incident_triggered"), "event"), {},
     "event"),
    ("pagerduty", _set(fixture_payload("pagerduty_incident_triggered"), 5, "event", "data",
                       "service"), {}, "event.data.service"),
    ("generic", _without(fixture_payload("generic_firing"), "name"), {}, "name"),
    ("generic", _set(fixture_payload("generic_firing"), "apocalyptic", "severity"), {},
     "severity"),
    ("generic", _set(fixture_payload("generic_firing"), "maybe", "status"), {}, "status"),
    ("generic", _set(fixture_payload("generic_firing"), [1, 2], "labels"), {}, "labels"),
    ("generic", [fixture_payload("generic_firing")], {}, "body"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "payload", "headers", "field"), WRONG_SHAPES)
def test_wrong_shape_names_the_field(
    source: str, payload: Any, headers: dict[str, str], field: str
) -> None:
    with pytest.raises(ShapeError) as caught:
        PARSERS[source](payload, headers)
    assert caught.value.field == field


def test_generic_numbers_in_labels_become_strings() -> None:
    payload = fixture_payload("generic_firing")
    payload["labels"] = {"replicas": 3, "canary": True}
    alert = PARSERS["generic"](payload, {}).alerts[0]
    assert alert.labels["replicas"] == "3"
    assert alert.labels["canary"] == "true"
    assert alert.labels["source"] == "uptime-checker"
