"""The wire shapes of the five webhook formats (only the fields we read; the rest is ignored).

Validation errors name the offending field; `intake.parsers` turns them into a 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _scalar_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_to_str)]
StrMap = dict[str, Text]


def _none_to_empty_map(value: Any) -> Any:
    return {} if value is None else value


OptStrMap = Annotated[StrMap, BeforeValidator(_none_to_empty_map)]


def _none_to_empty_str(value: Any) -> Any:
    return "" if value is None else _scalar_to_str(value)


OptText = Annotated[str, BeforeValidator(_none_to_empty_str)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- Alertmanager v4 and Grafana unified alerting (same envelope) ---------------------------


class AlertmanagerAlert(_Wire):
    status: Literal["firing", "resolved"]
    labels: StrMap
    annotations: OptStrMap = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: OptText = ""
    fingerprint: OptText = ""


class AlertmanagerWebhook(_Wire):
    version: OptText = "4"
    groupKey: OptText = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: OptText = ""
    alerts: list[AlertmanagerAlert]
    groupLabels: OptStrMap = Field(default_factory=dict)
    commonLabels: OptStrMap = Field(default_factory=dict)
    commonAnnotations: OptStrMap = Field(default_factory=dict)
    externalURL: OptText = ""


class GrafanaAlert(AlertmanagerAlert):
    dashboardURL: OptText = ""
    panelURL: OptText = ""
    valueString: OptText = ""


class GrafanaWebhook(AlertmanagerWebhook):
    alerts: list[GrafanaAlert]  # type: ignore[assignment]
    orgId: int | None = None
    title: OptText = ""
    state: OptText = ""
    message: OptText = ""


# --- Sentry ---------------------------------------------------------------------------------


class SentryAlertRule(_Wire):
    name: OptText = ""
    aggregate: OptText = ""
    query: OptText = ""


class SentryMetricAlert(_Wire):
    id: Text
    title: OptText = ""
    alert_rule: SentryAlertRule = Field(default_factory=SentryAlertRule)


class SentryMetricAlertData(_Wire):
    metric_alert: SentryMetricAlert
    description_text: OptText = ""
    description_title: OptText = ""
    web_url: OptText = ""


class SentryMetricAlertHook(_Wire):
    action: Literal["critical", "warning", "resolved"]
    data: SentryMetricAlertData


class SentryEvent(_Wire):
    event_id: OptText = ""
    title: OptText = ""
    message: OptText = ""
    level: OptText = "error"
    culprit: OptText = ""
    issue_id: OptText = ""
    web_url: OptText = ""
    environment: OptText = ""
    tags: list[list[Text]] | None = None


class SentryEventAlertData(_Wire):
    event: SentryEvent
    triggered_rule: OptText = ""


class SentryEventAlertHook(_Wire):
    action: OptText = "triggered"
    data: SentryEventAlertData


class SentryProject(_Wire):
    slug: OptText = ""


class SentryIssue(_Wire):
    id: Text
    title: OptText = ""
    culprit: OptText = ""
    level: OptText = "error"
    status: OptText = ""
    web_url: OptText = ""
    project: SentryProject = Field(default_factory=SentryProject)


class SentryIssueData(_Wire):
    issue: SentryIssue


class SentryIssueHook(_Wire):
    action: Text
    data: SentryIssueData


# --- PagerDuty v3 ---------------------------------------------------------------------------


class PagerDutyReference(_Wire):
    id: OptText = ""
    summary: OptText = ""


class PagerDutyIncident(_Wire):
    id: OptText = ""
    title: OptText = ""
    status: OptText = ""
    urgency: OptText = ""
    incident_key: OptText = ""
    html_url: OptText = ""
    service: PagerDutyReference | None = None
    priority: PagerDutyReference | None = None


class PagerDutyEvent(_Wire):
    id: OptText = ""
    event_type: Text
    resource_type: OptText = ""
    occurred_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PagerDutyWebhook(_Wire):
    event: PagerDutyEvent


# --- generic --------------------------------------------------------------------------------


class GenericAlert(_Wire):
    source: OptText = ""
    name: Annotated[str, Field(min_length=1, max_length=500)]
    severity: OptText = "warning"
    summary: OptText = ""
    dedup_key: OptText = ""
    labels: OptStrMap = Field(default_factory=dict)
    annotations: OptStrMap = Field(default_factory=dict)
    status: Literal["firing", "resolved"] = "firing"
    starts_at: datetime | None = None
