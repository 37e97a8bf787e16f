"""The HTTP contract, against a real intake process: answers, auth, limits, shapes, metrics."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from intake_harness import (
    GRAFANA_TS_HEADER,
    SECRETS,
    IntakeProcess,
    Sender,
    fixture_payload,
    generic_alert,
    unique,
)

from intake import auth

pytestmark = pytest.mark.integration

SEND = Sender()


@pytest.fixture
async def client(intake_server: IntakeProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as c:
        yield c


async def post(
    client: httpx.AsyncClient, source: str, payload: Any, extra: dict[str, str] | None = None
) -> httpx.Response:
    path, body, headers = SEND.request(source, payload, extra)
    return await client.post(path, content=body, headers=headers)


def _isolated(payload: dict[str, Any], target: str) -> dict[str, Any]:
    """Give an Alertmanager/Grafana/generic payload a target of its own (its own incident)."""
    if "alerts" in payload:
        for a in payload["alerts"]:
            a["labels"]["target"] = target
    elif "labels" in payload:
        payload["labels"]["target"] = target
    return payload


FIXTURE_ROUTES = [
    ("alertmanager", "alertmanager_firing", {}, "high-error-rate", "new"),
    ("alertmanager", "alertmanager_truncated", {}, "database-connections", "new"),
    ("grafana", "grafana_firing", {}, "high-latency", "new"),
    ("sentry", "sentry_metric_alert", {"Sentry-Hook-Resource": "metric_alert"},
     "high-error-rate", None),
    ("sentry", "sentry_event_alert", {"Sentry-Hook-Resource": "event_alert"},
     "llm-provider", None),
    ("pagerduty", "pagerduty_incident_triggered", {}, "database-connections", None),
    ("generic", "generic_firing", {}, "complete-outage", "new"),
    ("generic", "generic_unmatched", {}, "triage", "triaged"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "fixture", "extra", "route", "status"),
    FIXTURE_ROUTES,
    ids=[f[1] for f in FIXTURE_ROUTES],
)
async def test_real_format_delivery_is_202_with_incident_and_route(
    client: httpx.AsyncClient,
    source: str,
    fixture: str,
    extra: dict[str, str],
    route: str,
    status: str | None,
) -> None:
    payload = _isolated(fixture_payload(fixture), unique())
    response = await post(client, source, payload, extra)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["route"] == route
    assert body["incident"]
    if status is not None:
        assert body["status"] == status
    if fixture == "alertmanager_truncated":
        assert body["truncated_alerts"] == 7
        # two alerts of one problem: one incident, the second attached to it
        assert [a["status"] for a in body["alerts"]] == ["new", "coalesced"]
        assert body["alerts"][0]["incident"] == body["alerts"][1]["incident"]


async def test_basic_auth_with_token_as_password_is_accepted(client: httpx.AsyncClient) -> None:
    body = json.dumps(_isolated(fixture_payload("alertmanager_firing"), unique())).encode()
    response = await client.post(
        "/alerts/alertmanager",
        content=body,
        headers={"Content-Type": "application/json"},
        auth=("alertmanager", SECRETS["RUNBOOK_ALERTMANAGER_TOKEN"]),
    )
    assert response.status_code == 202, response.text


def _drop(headers: dict[str, str], *names: str) -> dict[str, str]:
    lowered = {n.lower() for n in names}
    return {k: v for k, v in headers.items() if k.lower() not in lowered}


AUTH_FAILURES: list[tuple[str, str, Callable[[dict[str, str]], dict[str, str]]]] = [
    ("alertmanager", "missing", lambda h: _drop(h, "Authorization")),
    ("alertmanager", "wrong-token", lambda h: {**h, "Authorization": "Bearer nope"}),
    ("grafana", "missing", lambda h: _drop(h, "X-Grafana-Alerting-Signature")),
    ("grafana", "wrong", lambda h: {**h, "X-Grafana-Alerting-Signature": "00" * 32}),
    ("sentry", "missing", lambda h: _drop(h, "Sentry-Hook-Signature")),
    ("sentry", "wrong", lambda h: {**h, "Sentry-Hook-Signature": "ab" * 32}),
    ("pagerduty", "missing", lambda h: _drop(h, "X-PagerDuty-Signature")),
    ("pagerduty", "wrong", lambda h: {**h, "X-PagerDuty-Signature": "v1=" + "cd" * 32}),
    ("generic", "missing-signature", lambda h: _drop(h, "X-Signature")),
    ("generic", "missing-timestamp", lambda h: _drop(h, "X-Timestamp")),
    ("generic", "wrong", lambda h: {**h, "X-Signature": "sha256=" + "ef" * 32}),
]
_PAYLOADS = {
    "alertmanager": "alertmanager_firing",
    "grafana": "grafana_firing",
    "sentry": "sentry_issue",
    "pagerduty": "pagerduty_incident_triggered",
    "generic": "generic_firing",
}


@pytest.mark.parametrize(
    ("source", "case", "tamper"), AUTH_FAILURES, ids=[f"{s}-{c}" for s, c, _ in AUTH_FAILURES]
)
async def test_auth_failure_is_401(
    client: httpx.AsyncClient,
    source: str,
    case: str,
    tamper: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    path, body, headers = SEND.request(source, fixture_payload(_PAYLOADS[source]))
    headers["Sentry-Hook-Resource"] = "issue"
    response = await client.post(path, content=body, headers=tamper(headers))
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid credentials"}


async def test_signature_of_another_body_is_401(client: httpx.AsyncClient) -> None:
    path, body, headers = SEND.request("sentry", fixture_payload("sentry_issue"))
    headers["Sentry-Hook-Resource"] = "issue"
    response = await client.post(
        path, content=body.replace(b"KeyError", b"KeyErrox"), headers=headers
    )
    assert response.status_code == 401


async def test_replayed_generic_alert_outside_window_is_401(client: httpx.AsyncClient) -> None:
    body = json.dumps(generic_alert("ReplayMe", labels={"target": unique()})).encode()
    stale = auth.sign_generic(SECRETS["RUNBOOK_GENERIC_SECRET"], body, int(time.time()) - 301)
    headers = {"Content-Type": "application/json", **stale}
    response = await client.post("/alerts/generic", content=body, headers=headers)
    assert response.status_code == 401
    # the same delivery signed now is fine: it is the age that was refused
    fresh = auth.sign_generic(SECRETS["RUNBOOK_GENERIC_SECRET"], body, int(time.time()))
    response = await client.post("/alerts/generic", content=body, headers={**headers, **fresh})
    assert response.status_code == 202


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    payload = generic_alert("Big", summary="x" * (1024 * 1024))
    response = await post(client, "generic", payload)
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b" " * 65536
        yield b"{}"

    response = await client.post(
        "/alerts/generic", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_non_json_is_415_and_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    path, body, headers = SEND.request("generic", generic_alert("Plain"))
    response = await client.post(
        path, content=body, headers={**headers, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    response = await client.post(path, content=body, headers=_drop(headers, "Content-Type"))
    assert response.status_code == 415
    broken = b'{"name": "x", '
    headers = SEND.headers("generic", broken)
    response = await client.post(path, content=broken, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}


@pytest.mark.parametrize(
    ("source", "payload", "field"),
    [
        ("generic", {"severity": "critical"}, "name"),
        ("generic", {"name": "x", "status": "exploding"}, "status"),
        ("alertmanager", {"status": "firing", "alerts": [{"status": "firing"}]}, "alerts.0.labels"),
        ("pagerduty", {"events": []}, "event"),
        ("generic", ["not", "an", "object"], "body"),
    ],
)
async def test_wrong_shape_is_422_naming_the_field(
    client: httpx.AsyncClient, source: str, payload: Any, field: str
) -> None:
    response = await post(client, source, payload)
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{field}:")


async def test_pagerduty_redelivery_with_same_webhook_id_is_counted_once(
    client: httpx.AsyncClient,
) -> None:
    payload = fixture_payload("pagerduty_incident_triggered")
    payload["event"]["data"]["title"] = f"Database connection pool exhausted {unique()}"
    webhook_id = unique("wh")
    first = await post(client, "pagerduty", payload, {"X-Webhook-Id": webhook_id})
    again = await post(client, "pagerduty", payload, {"X-Webhook-Id": webhook_id})
    assert first.status_code == again.status_code == 202
    assert again.json()["incident"] == first.json()["incident"]
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["alert_count"] == first.json()["alert_count"]


async def test_pagerduty_acknowledged_is_202_ignored(client: httpx.AsyncClient) -> None:
    response = await post(client, "pagerduty", fixture_payload("pagerduty_incident_acknowledged"))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"


async def test_unknown_path_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    assert (await client.post("/alerts/nagios", json={})).status_code == 404
    response = await client.get("/alerts/generic")
    assert response.status_code == 405
    assert response.json() == {"error": "method not allowed"}


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "database": "ok"}
    await post(client, "generic", generic_alert("MetricsProbe", labels={"target": unique()}))
    await client.post(
        "/alerts/generic", content=b"{}", headers={"Content-Type": "application/json"}
    )
    text = (await client.get("/metrics")).text
    for name in (
        'intake_deliveries_received_total{source="generic"}',
        'intake_alerts_accepted_total{source="generic",status="new"}',
        'intake_deliveries_rejected_total{reason="missing_signature",source="generic"}',
        "intake_alerts_coalesced_total",
        "intake_dispatched_total",
        "intake_dispatch_failures_total",
        "intake_outbox_depth",
        'intake_ack_seconds_bucket{le="0.1",source="generic"}',
    ):
        assert name in text, name


async def test_grafana_with_timestamp_header_configured(
    spawn_intake: Callable[..., IntakeProcess],
) -> None:
    proc = spawn_intake(
        RUNBOOK_GRAFANA_TIMESTAMP_HEADER=GRAFANA_TS_HEADER, RUNBOOK_INTAKE_DISPATCH="false"
    )
    payload = _isolated(fixture_payload("grafana_firing"), unique())
    signed = Sender(grafana_timestamp_header=GRAFANA_TS_HEADER)
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as c:
        path, body, headers = signed.request("grafana", payload)
        ok = await c.post(path, content=body, headers=headers)
        assert ok.status_code == 202, ok.text
        assert ok.json()["route"] == "high-latency"
        # the plain body signature (no timestamp) is refused on this configuration
        path, body, headers = SEND.request("grafana", payload)
        assert (await c.post(path, content=body, headers=headers)).status_code == 401
        # and so is a signed timestamp outside the window
        old = int(time.time()) - 600
        stale = auth.sign_grafana(
            SECRETS["RUNBOOK_GRAFANA_SECRET"], body, ts=old, timestamp_header=GRAFANA_TS_HEADER
        )
        headers = {"Content-Type": "application/json", **stale}
        assert (await c.post(path, content=body, headers=headers)).status_code == 401


async def test_logs_never_contain_secrets_or_signatures(
    client: httpx.AsyncClient, intake_server: IntakeProcess
) -> None:
    path, body, headers = SEND.request("sentry", fixture_payload("sentry_issue"))
    await client.post(path, content=body, headers={**headers, "Sentry-Hook-Resource": "issue"})
    await client.post(path, content=body + b" ", headers=headers)  # bad signature, logged
    log = intake_server.log()
    assert "rejected sentry delivery: 401 bad_signature" in log
    for secret in SECRETS.values():
        assert secret not in log
    assert headers["Sentry-Hook-Signature"] not in log


async def test_alertmanager_group_with_firing_and_resolved_alerts(
    client: httpx.AsyncClient,
) -> None:
    """One notification, two problems: each alert goes its own way, atomically."""
    latency, errors = unique(), unique()
    opened = fixture_payload("alertmanager_firing")
    opened["alerts"][0]["labels"]["target"] = errors
    first = await post(client, "alertmanager", opened)
    assert first.json()["status"] == "new"
    group = fixture_payload("alertmanager_firing")
    slow = json.loads(json.dumps(group["alerts"][0]))
    slow["labels"].update(alertname="HighLatency", target=latency)
    slow["annotations"] = {"summary": "P99 latency above 10s"}
    done = group["alerts"][0]
    done["labels"]["target"] = errors
    done["status"] = "resolved"
    group["alerts"] = [slow, done]
    response = await post(client, "alertmanager", group)
    assert response.status_code == 202
    alerts = response.json()["alerts"]
    assert [(a["route"], a["status"]) for a in alerts] == [
        ("high-latency", "new"),
        ("high-error-rate", "resolved"),
    ]
    assert alerts[1]["incident"] == first.json()["incident"]
