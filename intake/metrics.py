"""Prometheus metrics of one intake app (its own registry, so several apps can coexist)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IntakeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "intake_deliveries_received", "Webhook deliveries received", ["source"], registry=r
        )
        self.accepted = Counter(
            "intake_alerts_accepted",
            "Alerts persisted, by what they did to their incident",
            ["source", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "intake_deliveries_rejected",
            "Deliveries refused, by reason",
            ["source", "reason"],
            registry=r,
        )
        self.coalesced = Counter(
            "intake_alerts_coalesced",
            "Alerts attached to an existing incident (duplicates, resends, storms)",
            ["source"],
            registry=r,
        )
        self.dispatched = Counter(
            "intake_dispatched",
            "Incident actions completed (flow run created, Slack notified, PagerDuty paged)",
            ["action"],
            registry=r,
        )
        self.dispatch_failures = Counter(
            "intake_dispatch_failures",
            "Failed dispatch attempts (retried with backoff)",
            ["action"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "intake_outbox_depth", "Incident actions not yet dispatched", registry=r
        )
        self.oldest_undispatched = Gauge(
            "runbook_intake_oldest_undispatched_seconds",
            "Age of the oldest incident action not yet dispatched (0 when none): alert on it,"
            " it grows while Prefect, Slack or PagerDuty cannot be reached",
            registry=r,
        )
        self.ack_seconds = Histogram(
            "intake_ack_seconds",
            "Time from request to answer for accepted deliveries (persist included)",
            ["source"],
            buckets=_ACK_BUCKETS,
            registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: the hot path skips prometheus_client's label
        validation and locking on every delivery."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
