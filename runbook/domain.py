"""Domain types every part shares: check status, check results, the health report.

A check either observed the thing (`ok` / `warn` / `critical`, judged against the Policy's
thresholds) or could not observe it (`unavailable`, with the reason). "Could not check" is never
the same as "healthy", and never an exception.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"
    UNAVAILABLE = "unavailable"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.OK: 0, Status.UNAVAILABLE: 1, Status.WARN: 2, Status.CRITICAL: 3}


def classify(value: float, warn: float, critical: float, *, higher_is_worse: bool = True) -> Status:
    """Judge a measured value against a warn and a critical threshold (strictly beyond = breach).

    The runbook's table reads "Error rate >0.5 % warn, >2 % critical" and
    "Automation rate <75 % warn, <60 % critical": both directions are supported.
    """
    if higher_is_worse:
        if value > critical:
            return Status.CRITICAL
        if value > warn:
            return Status.WARN
        return Status.OK
    if value < critical:
        return Status.CRITICAL
    if value < warn:
        return Status.WARN
    return Status.OK


class CheckResult(BaseModel):
    """What one check saw. Small, frozen, JSON-friendly; never raw API payloads."""

    model_config = ConfigDict(frozen=True)

    name: str
    component: str
    status: Status
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float = 0.0

    @classmethod
    def unavailable(cls, name: str, component: str, reason: str, **details: Any) -> CheckResult:
        return cls(
            name=name,
            component=component,
            status=Status.UNAVAILABLE,
            summary=reason,
            details=details,
        )


class HealthReport(BaseModel):
    """The health-check flow's answer: every check, and the worst status among them."""

    model_config = ConfigDict(frozen=True)

    checks: tuple[CheckResult, ...]
    elapsed_ms: float = 0.0
    taken_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> Status:
        return aggregate(self.checks)

    def by_name(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def with_status(self, *statuses: Status) -> list[CheckResult]:
        return [c for c in self.checks if c.status in statuses]

    def to_markdown(self) -> str:
        lines = [
            f"## Health report — overall **{self.status.value}**",
            "",
            f"Taken at {self.taken_at.isoformat(timespec='seconds')} in {self.elapsed_ms:.0f} ms",
            "",
            "| check | component | status | summary | ms |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            summary = c.summary.replace("|", "\\|")
            lines.append(
                f"| {c.name} | {c.component} | {c.status.value} | {summary} | {c.duration_ms:.0f} |"
            )
        return "\n".join(lines)


def aggregate(checks: tuple[CheckResult, ...] | list[CheckResult]) -> Status:
    """Worst status wins: critical > warn > unavailable > ok. No checks at all is unavailable."""
    if not checks:
        return Status.UNAVAILABLE
    return max((c.status for c in checks), key=lambda s: s.rank)
