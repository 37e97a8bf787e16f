"""Threshold classification, report aggregation and health-answer classification (no services)."""

from __future__ import annotations

import httpx
import pytest

from runbook.cli import EXIT_CRITICAL, EXIT_OK, EXIT_UNAVAILABLE, exit_code_for
from runbook.domain import CheckResult, HealthReport, Status, aggregate, classify
from tasks.support_api import classify_health_response

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "warn", "critical", "higher_is_worse", "expected"),
    [
        # runbook Key Metrics: error rate >0.5 % warn, >2 % critical
        (0.2, 0.5, 2.0, True, Status.OK),
        (0.5, 0.5, 2.0, True, Status.OK),  # "more than" 0.5: exactly 0.5 is still fine
        (0.6, 0.5, 2.0, True, Status.WARN),
        (2.0, 0.5, 2.0, True, Status.WARN),
        (2.1, 0.5, 2.0, True, Status.CRITICAL),
        # P99 latency >5 s warn, >10 s critical
        (11.0, 5.0, 10.0, True, Status.CRITICAL),
        # automation rate <75 % warn, <60 % critical (lower is worse)
        (80.0, 75.0, 60.0, False, Status.OK),
        (70.0, 75.0, 60.0, False, Status.WARN),
        (59.0, 75.0, 60.0, False, Status.CRITICAL),
        # DB connections >80 % warn, >95 % critical
        (96.0, 80.0, 95.0, True, Status.CRITICAL),
    ],
)
def test_threshold_classification_table(
    value: float, warn: float, critical: float, higher_is_worse: bool, expected: Status
) -> None:
    assert classify(value, warn, critical, higher_is_worse=higher_is_worse) is expected


def _check(name: str, status: Status) -> CheckResult:
    return CheckResult(name=name, component="x", status=status, summary=status.value)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], Status.UNAVAILABLE),
        ([Status.OK, Status.OK], Status.OK),
        ([Status.OK, Status.UNAVAILABLE], Status.UNAVAILABLE),
        ([Status.UNAVAILABLE, Status.WARN], Status.WARN),
        ([Status.WARN, Status.CRITICAL, Status.OK], Status.CRITICAL),
    ],
)
def test_report_aggregation_worst_status_wins(statuses: list[Status], expected: Status) -> None:
    checks = [_check(f"c{i}", s) for i, s in enumerate(statuses)]
    assert aggregate(checks) is expected
    assert HealthReport(checks=tuple(checks)).status is expected


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([Status.OK, Status.WARN], EXIT_OK),
        ([Status.OK, Status.UNAVAILABLE], EXIT_UNAVAILABLE),
        ([Status.UNAVAILABLE, Status.CRITICAL], EXIT_CRITICAL),
    ],
)
def test_check_exit_code_is_nonzero_when_critical_or_unreachable(
    statuses: list[Status], code: int
) -> None:
    report = HealthReport(checks=tuple(_check(f"c{i}", s) for i, s in enumerate(statuses)))
    assert exit_code_for(report) == code


def test_report_markdown_lists_every_check() -> None:
    report = HealthReport(checks=(_check("api_health", Status.OK), _check("redis", Status.WARN)))
    text = report.to_markdown()
    assert "overall **warn**" in text
    assert "| api_health |" in text and "| redis |" in text


@pytest.mark.parametrize(
    ("status_code", "body", "content_type", "expected", "summary_part"),
    [
        (200, '{"status": "ok"}', "application/json", Status.OK, "ok"),
        (200, "OK", "text/plain", Status.OK, "ok"),
        (503, '{"status": "error"}', "application/json", Status.CRITICAL, "HTTP 503"),
        (500, "boom", "text/plain", Status.CRITICAL, "HTTP 500"),
        (404, "not found", "text/plain", Status.CRITICAL, "HTTP 404"),
        (200, "<html>proxy</html>", "text/html", Status.WARN, "not a health document"),
        (200, "[1, 2]", "application/json", Status.WARN, "not a health document"),
        (
            200,
            '{"status": "ok", "checks": {"database": "error", "redis": "ok"}}',
            "application/json",
            Status.CRITICAL,
            "database",
        ),
        (200, '{"status": "degraded"}', "application/json", Status.CRITICAL, "degraded"),
    ],
)
def test_health_answer_classification(
    status_code: int, body: str, content_type: str, expected: Status, summary_part: str
) -> None:
    response = httpx.Response(status_code, text=body, headers={"content-type": content_type})
    result = classify_health_response("api_ready", response)
    assert result.status is expected
    assert summary_part.lower() in result.summary.lower()
