"""The one `Alert` type every webhook format is parsed into, and its severity.

An alert is what a monitoring system said about one problem at one moment: firing or resolved,
a name, labels, a human summary. Intake parses Alertmanager, Grafana, Sentry, PagerDuty and the
generic format into this type, routes it to a runbook flow, and coalesces it into an incident.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    """PagerDuty Events v2's four levels, which every source maps onto."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def is_known(cls, value: Any) -> bool:
        return str(value or "").strip().lower() in _ALIASES

    @classmethod
    def parse(cls, value: Any, default: Severity | None = None) -> Severity:
        """Map the many spellings sources use (`P1`, `page`, `high`, `fatal`, …) onto ours."""
        text = str(value or "").strip().lower()
        mapped = _ALIASES.get(text)
        if mapped is not None:
            return mapped
        return default if default is not None else cls.WARNING


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2, Severity.CRITICAL: 3}
_ALIASES: dict[str, Severity] = {
    **{s.value: s for s in Severity},
    "crit": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "p1": Severity.CRITICAL,
    "sev1": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "high": Severity.ERROR,
    "major": Severity.ERROR,
    "p2": Severity.ERROR,
    "sev2": Severity.ERROR,
    "err": Severity.ERROR,
    "warn": Severity.WARNING,
    "medium": Severity.WARNING,
    "minor": Severity.WARNING,
    "p3": Severity.WARNING,
    "sev3": Severity.WARNING,
    "low": Severity.INFO,
    "p4": Severity.INFO,
    "p5": Severity.INFO,
    "debug": Severity.INFO,
    "none": Severity.INFO,
}


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert from one source, normalised. Frozen and JSON-friendly."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="alertmanager, grafana, sentry, pagerduty or generic")
    name: str = Field(description="the alert rule's name (Alertmanager `alertname`)")
    status: AlertStatus
    severity: Severity = Severity.WARNING
    summary: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = Field("", description="the source's identity of this alert, if any")
    delivery_id: str | None = Field(
        None, description="the delivery's id, for exact-redelivery dedupe"
    )
    starts_at: datetime | None = None
    url: str | None = None

    @property
    def firing(self) -> bool:
        return self.status is AlertStatus.FIRING

    def text(self) -> str:
        """Name and summary together: what the routing table's text patterns search."""
        return f"{self.name}\n{self.summary}"
