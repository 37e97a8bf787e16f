"""Parse each webhook format into `Alert`s: pure functions of (payload, headers).

A payload of the wrong shape raises `ShapeError` naming the field (dotted path) → 422.
A delivery that carries no alert (PagerDuty `incident.acknowledged`, Sentry `issue.assigned`, …)
parses to no alerts with an `ignored` reason → 202 `ignored`. Identities the sender chooses
(delivery ids, fingerprints) longer than `MAX_ID_BYTES` are replaced by their SHA-256
(`bounded_id`), so any length dedupes and none reaches a database limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from intake import payloads as wire
from runbook.alerts import Alert, AlertStatus, Severity

SOURCES = ("alertmanager", "grafana", "sentry", "pagerduty", "generic")

_MAX_TEXT = 2000
MAX_ID_BYTES = 200


class ShapeError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Parsed:
    alerts: tuple[Alert, ...]
    ignored: str | None = None
    truncated: int = 0


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], payload: Any) -> M:
    if not isinstance(payload, dict):
        raise ShapeError("body", "expected a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ShapeError(field, first["msg"]) from None


def bounded_id(value: str) -> str:
    """`value`, or `"sha256:" + hex digest` of its UTF-8 when it is over `MAX_ID_BYTES` bytes.

    Used for every delivery id and fingerprint before it is a dedupe key or stored: the same
    long id always gives the same key (a redelivery is still a duplicate), and a key is never
    longer than 200 bytes (an index entry holds at most ~2.7 kB)."""
    if len(value) * 4 <= MAX_ID_BYTES:  # fast path: no UTF-8 character is over 4 bytes
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_ID_BYTES:
        return value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _delivery(value: str | None) -> str | None:
    return bounded_id(value) if value else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _summary(annotations: Mapping[str, str], *fallbacks: str) -> str:
    for key in ("summary", "description", "message"):
        if annotations.get(key):
            return _clip(annotations[key])
    return _clip(next((f for f in fallbacks if f), ""))


def parse_alertmanager(payload: Any, headers: Mapping[str, str]) -> Parsed:
    """Alertmanager webhook v4: one delivery carries a group of alerts, each with its status."""
    hook = _validate(wire.AlertmanagerWebhook, payload)
    return Parsed(
        tuple(_from_alertmanager("alertmanager", hook, a) for a in hook.alerts),
        truncated=hook.truncatedAlerts,
    )


def parse_grafana(payload: Any, headers: Mapping[str, str]) -> Parsed:
    """Grafana unified alerting: Alertmanager's envelope plus title/state/message."""
    hook = _validate(wire.GrafanaWebhook, payload)
    alerts = tuple(
        _from_alertmanager("grafana", hook, a, url=a.dashboardURL or a.panelURL or None)
        for a in hook.alerts
    )
    return Parsed(alerts, truncated=hook.truncatedAlerts)


def _from_alertmanager(
    source: str,
    hook: wire.AlertmanagerWebhook,
    alert: wire.AlertmanagerAlert,
    url: str | None = None,
) -> Alert:
    labels = {**hook.commonLabels, **alert.labels}
    annotations = {**hook.commonAnnotations, **alert.annotations}
    name = labels.get("alertname") or hook.groupLabels.get("alertname") or "unnamed alert"
    starts = alert.startsAt if alert.startsAt and alert.startsAt.year > 1 else None
    return Alert(
        source=source,
        name=_clip(name),
        status=AlertStatus(alert.status),
        severity=Severity.parse(labels.get("severity")),
        summary=_summary(annotations, name),
        labels=labels,
        annotations=annotations,
        fingerprint=bounded_id(alert.fingerprint),
        starts_at=starts,
        url=url or alert.generatorURL or None,
    )


SENTRY_RESOURCES = ("metric_alert", "event_alert", "issue")
_SENTRY_ISSUE_FIRING = {"created", "unresolved", "regression"}


def parse_sentry(payload: Any, headers: Mapping[str, str]) -> Parsed:
    """Sentry integration webhooks; the resource is in `Sentry-Hook-Resource`."""
    resource = headers.get("sentry-hook-resource", "").strip()
    if not resource:
        raise ShapeError("Sentry-Hook-Resource", "header is required")
    if resource not in SENTRY_RESOURCES:
        if not isinstance(payload, dict):
            raise ShapeError("body", "expected a JSON object")
        return Parsed((), ignored=f"sentry resource {resource[:40]!r} is not an alert")
    delivery = headers.get("request-id") or None
    if resource == "metric_alert":
        hook = _validate(wire.SentryMetricAlertHook, payload)
        rule = hook.data.metric_alert.alert_rule
        name = hook.data.description_title or hook.data.metric_alert.title or rule.name
        status = AlertStatus.RESOLVED if hook.action == "resolved" else AlertStatus.FIRING
        severity = Severity.CRITICAL if hook.action == "critical" else Severity.WARNING
        labels = {"sentry_resource": resource}
        if rule.aggregate:
            labels["aggregate"] = rule.aggregate
        return Parsed(
            (
                Alert(
                    source="sentry",
                    name=_clip(name or "sentry metric alert"),
                    status=status,
                    severity=severity,
                    summary=_clip(hook.data.description_text or name),
                    labels=labels,
                    fingerprint=bounded_id(f"metric_alert:{hook.data.metric_alert.id}"),
                    delivery_id=_delivery(delivery),
                    url=hook.data.web_url or None,
                ),
            )
        )
    if resource == "event_alert":
        ev = _validate(wire.SentryEventAlertHook, payload)
        event = ev.data.event
        labels = {"sentry_resource": resource}
        for pair in event.tags or []:
            if len(pair) == 2 and pair[0] in {"environment", "service", "server_name", "level"}:
                labels[pair[0]] = pair[1]
        if event.environment:
            labels["environment"] = event.environment
        title = event.title or event.message or "sentry event"
        return Parsed(
            (
                Alert(
                    source="sentry",
                    name=_clip(ev.data.triggered_rule or title),
                    status=AlertStatus.FIRING,
                    severity=Severity.parse(event.level, Severity.ERROR),
                    summary=_clip(title if not event.culprit else f"{title} ({event.culprit})"),
                    labels=labels,
                    fingerprint=bounded_id(
                        f"issue:{event.issue_id}" if event.issue_id else event.event_id
                    ),
                    delivery_id=_delivery(delivery),
                    url=event.web_url or None,
                ),
            )
        )
    issue_hook = _validate(wire.SentryIssueHook, payload)
    issue = issue_hook.data.issue
    if issue_hook.action == "resolved":
        status = AlertStatus.RESOLVED
    elif issue_hook.action in _SENTRY_ISSUE_FIRING:
        status = AlertStatus.FIRING
    else:
        return Parsed((), ignored=f"sentry issue action {issue_hook.action[:40]!r}")
    labels = {"sentry_resource": resource}
    if issue.project.slug:
        labels["project"] = issue.project.slug
    return Parsed(
        (
            Alert(
                source="sentry",
                name=_clip(issue.title or "sentry issue"),
                status=status,
                severity=Severity.parse(issue.level, Severity.ERROR),
                summary=_clip(f"{issue.title} ({issue.culprit})" if issue.culprit else issue.title),
                labels=labels,
                fingerprint=bounded_id(f"issue:{issue.id}"),
                delivery_id=_delivery(delivery),
                url=issue.web_url or None,
            ),
        )
    )


_PD_FIRING = {"incident.triggered", "incident.reopened"}
_PD_RESOLVED = {"incident.resolved"}


def parse_pagerduty(payload: Any, headers: Mapping[str, str]) -> Parsed:
    """PagerDuty v3 webhooks: triggered/reopened fire, resolved resolves, the rest is ignored."""
    hook = _validate(wire.PagerDutyWebhook, payload)
    event = hook.event
    if event.event_type in _PD_FIRING:
        status = AlertStatus.FIRING
    elif event.event_type in _PD_RESOLVED:
        status = AlertStatus.RESOLVED
    else:
        return Parsed((), ignored=f"pagerduty event {event.event_type[:40]!r}")
    try:
        incident = wire.PagerDutyIncident.model_validate(event.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["event", "data", *(str(p) for p in first["loc"])])
        raise ShapeError(field, first["msg"]) from None
    labels: dict[str, str] = {"pagerduty_incident": incident.id}
    if incident.service and incident.service.summary:
        labels["service"] = incident.service.summary
    if incident.urgency:
        labels["urgency"] = incident.urgency
    priority = incident.priority.summary if incident.priority else ""
    default = Severity.CRITICAL if incident.urgency == "high" else Severity.WARNING
    title = incident.title or "pagerduty incident"
    return Parsed(
        (
            Alert(
                source="pagerduty",
                name=_clip(title),
                status=status,
                severity=Severity.parse(priority, default),
                summary=_clip(title),
                labels=labels,
                fingerprint=bounded_id(incident.incident_key or incident.id),
                delivery_id=_delivery(headers.get("x-webhook-id") or event.id),
                starts_at=event.occurred_at if status is AlertStatus.FIRING else None,
                url=incident.html_url or None,
            ),
        )
    )


def parse_generic(payload: Any, headers: Mapping[str, str]) -> Parsed:
    """Our own format: `{source, name, severity, summary, dedup_key, labels, annotations,
    status, starts_at}`."""
    alert = _validate(wire.GenericAlert, payload)
    if alert.severity.strip() and not Severity.is_known(alert.severity):
        raise ShapeError("severity", "unknown severity (use critical, error, warning or info)")
    severity = Severity.parse(alert.severity)
    labels = dict(alert.labels)
    if alert.source:
        labels.setdefault("source", alert.source)
    return Parsed(
        (
            Alert(
                source="generic",
                name=_clip(alert.name),
                status=AlertStatus(alert.status),
                severity=severity,
                summary=_clip(alert.summary) or _summary(alert.annotations, alert.name),
                labels=labels,
                annotations=dict(alert.annotations),
                fingerprint=bounded_id(alert.dedup_key),
                starts_at=alert.starts_at,
            ),
        )
    )


PARSERS: dict[str, Callable[[Any, Mapping[str, str]], Parsed]] = {
    "alertmanager": parse_alertmanager,
    "grafana": parse_grafana,
    "sentry": parse_sentry,
    "pagerduty": parse_pagerduty,
    "generic": parse_generic,
}
