"""Runbook "Monitoring & Alerts" → "Key Metrics to Watch": the key-metrics watch (every minute).

Each run measures the table from real sources — error rate, P99 latency, automation and
escalation rate and the app's sessions from the app database (one SQL round trip,
`tasks.app_metrics.get_key_metrics`), the app's pool (`DATABASE_POOL_SIZE` x replicas) from
Railway — and judges each against the Policy's warning/critical levels (`thresholds`). A breach
becomes one alert through our own intake (authenticated, deduplicated, routed, suppressed in a
maintenance window), exactly like an external monitor's:

* a critical level on a metric a runbook flow remediates → that flow's route (DB connections →
  §4, error rate → §1, P99 latency → §2; the first in that order wins, the others are listed in
  the alert): **criticals remediate**;
* anything else (warnings, automation/escalation rate, a source that cannot be read) → the
  `key-metrics` route, which notifies Slack and starts nothing: **warnings notify**.

One alert per run (one problem shows up in several metrics: a bad deploy raises the error and
escalation rates and lowers automation), the same dedup key every minute while it lasts; when the
breach ends (or moves to another route) the previous alert is sent `resolved`, which closes its
incident. Every run leaves a table artifact: each metric, its levels, its level now and its trend
against the previous run (the ops database keeps one sample per run).

The health-check flow stays the on-demand check (`runbook check`, the verify step of others).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Literal

import psycopg
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, Policy, Railway
from flows.database_connections import app_pool_pct
from flows.notifications import notify, page, page_failed_run
from runbook import metric_samples, opsdb
from runbook.domain import Status, classify
from runbook.errors import RunbookError
from runbook.plan import POOL_VARIABLE, ActionName
from runbook.policy import PolicyRules
from runbook.settings import get_settings
from tasks import app_metrics, intake_client, railway

Act = Literal["none", "notify", "remediate"]
# the watch changes nothing on the platform: it raises alerts, the routed flows act
ACT_ACTIONS: dict[str, ActionName] = {}
OTHER_ACTS = frozenset({"none", "notify", "remediate"})

SOURCE = "metrics-watch"
NOTIFY_ROUTE = "key-metrics"  # intake/routes.yaml: Slack only, no flow
# metric: (label, Policy threshold, unit, the route that remediates a critical level)
METRICS: dict[str, tuple[str, str, str, str | None]] = {
    "error_rate": ("Error rate", "error_rate_pct", "%", "high-error-rate"),
    "p99_latency": ("P99 latency", "p99_latency_s", "s", "high-latency"),
    "automation_rate": ("Automation rate", "automation_rate_pct", "%", None),
    "escalation_rate": ("Escalation rate", "escalation_rate_pct", "%", None),
    "db_connections": ("DB connections", "db_connections_pct", "% of pool", "database-connections"),
}
# which remediation wins when several metrics are critical (a saturated pool causes errors)
REMEDIATION_ORDER = ("db_connections", "error_rate", "p99_latency")
Level = Literal["ok", "warn", "critical", "no data"]


class WatchSignals(BaseModel):
    """One run's measurements: metric → value (None: no data), and what could not be read."""

    model_config = ConfigDict(frozen=True)

    values: dict[str, float | None]
    unavailable: dict[str, str] = {}  # source -> why it could not be read
    environment: str = "default"


class Reading(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    label: str
    value: float | None
    unit: str
    warn: float
    critical: float
    direction: Literal[">", "<"]
    level: Level
    trend: str = "—"

    def text(self) -> str:
        shown = "no data" if self.value is None else f"{self.value:g} {self.unit}"
        if self.level in ("warn", "critical"):
            limit = self.critical if self.level == "critical" else self.warn
            shown += f" ({self.level} {self.direction} {limit:g})"
        return f"{self.label.lower()} {shown}"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    readings: tuple[Reading, ...]
    alert: dict[str, Any] | None = None  # the generic-format alert to raise (firing)


class WatchResult(BaseModel):
    """What one run measured, decided and raised (the flow's return value)."""

    act: Act
    why: str
    readings: list[Reading]
    counts: dict[str, int] = {}
    raised: list[str] = []  # "firing <dedup key>: <intake answer>", "resolved …"
    elapsed_ms: float = 0.0
    dry_run: bool = False

    def reading(self, metric: str) -> Reading:
        return next(r for r in self.readings if r.metric == metric)


def read(metric: str, value: float | None, policy: PolicyRules) -> Reading:
    """One metric judged against the Policy's levels (strictly beyond a level is a breach)."""
    label, threshold, unit, _ = METRICS[metric]
    limit = policy.threshold(threshold)
    level: Level = "no data"
    if value is not None:
        status = classify(value, limit.warn, limit.critical, higher_is_worse=limit.higher_is_worse)
        level = "ok" if status is Status.OK else status.value  # type: ignore[assignment]
    return Reading(
        metric=metric,
        label=label,
        value=value,
        unit=unit,
        warn=limit.warn,
        critical=limit.critical,
        direction=">" if limit.higher_is_worse else "<",
        level=level,
    )


def decide(s: WatchSignals, policy: PolicyRules) -> Decision:
    """All of the watch's branching, pure: levels, then at most one alert (see the docstring)."""
    readings = tuple(read(m, s.values.get(m), policy) for m in METRICS)
    critical = [r for r in readings if r.level == "critical"]
    warned = [r for r in readings if r.level == "warn"]
    breaches = critical + warned
    lost = [f"{source} unreadable ({why})" for source, why in sorted(s.unavailable.items())]
    if not breaches and not lost:
        return Decision(act="none", why="every key metric within its levels", readings=readings)
    summary = "; ".join([r.text() for r in breaches] + lost)
    fixable = [m for m in REMEDIATION_ORDER if any(r.metric == m for r in critical)]
    if fixable:
        route = METRICS[fixable[0]][3]
        assert route is not None
        act: Act = "remediate"
        severity, name = "critical", "KeyMetricsCritical"
        why = f"{summary}: critical → {route}"
    else:
        route, act = NOTIFY_ROUTE, "notify"
        severity = "critical" if critical else "warning"
        name = "KeyMetricsCritical" if critical else "KeyMetricsWarning"
        why = f"{summary}: notify (no remediation flow for it)" if critical else f"{summary}: warn"
    alert = {
        "source": SOURCE,
        "name": name,
        "severity": severity,
        "status": "firing",
        "summary": f"Key metrics: {summary}"[:900],
        "dedup_key": f"{SOURCE}:{route}",
        "labels": {
            "runbook": route,
            "environment": s.environment,
            "metric": ",".join(r.metric for r in breaches) or "unavailable",
        },
    }
    return Decision(act=act, why=why, readings=readings, alert=alert)


def resolution(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> dict[str, Any]:
    """The previous run's alert as `resolved`, when this run no longer raises it (else {})."""
    if not previous or (current and current.get("dedup_key") == previous.get("dedup_key")):
        return {}
    return {
        **previous,
        "status": "resolved",
        "summary": f"resolved: {previous.get('summary', '')}"[:900],
    }


def trend(now: float | None, before: float | None) -> str:
    """The change since the previous run: ↑ +1.2 / ↓ -0.4 / → 0 / — (nothing to compare)."""
    if now is None or before is None:
        return "—"
    delta = round(now - before, 2)
    if delta > 0:
        return f"↑ +{delta:g}"
    if delta < 0:
        return f"↓ -{abs(delta):g}"
    return "→ 0"


async def observe(
    db: AppDatabase, rw: Railway, window_s: int, until: datetime | None
) -> tuple[WatchSignals, dict[str, int]]:
    """The sources, concurrently: one SQL round trip to the app database, Railway's pool size
    and replica count. A source that cannot be read is `unavailable`, never 0."""

    async def maybe(coro: Any) -> tuple[Any, str | None]:
        try:
            return await coro, None
        except RunbookError as exc:
            return None, str(exc)

    (measured, db_error), (pool, pool_error), (instance, si_error) = await asyncio.gather(
        maybe(app_metrics.get_key_metrics(db, window_s, until)),
        maybe(railway.get_variable(rw, POOL_VARIABLE)),
        maybe(railway.get_service_instance(rw)),
    )
    unavailable: dict[str, str] = {}
    if db_error:
        unavailable["app database"] = db_error
    if pool_error or si_error:
        unavailable["railway"] = str(pool_error or si_error)
    values: dict[str, float | None] = dict.fromkeys(METRICS)
    counts: dict[str, int] = {}
    if measured is not None:
        values.update(
            error_rate=measured.error_rate_pct,
            p99_latency=measured.p99_latency_s,
            automation_rate=measured.automation_rate_pct,
            escalation_rate=measured.escalation_rate_pct,
        )
        counts = {
            "replies": measured.replies,
            "errors": measured.errors,
            "outcomes": measured.outcomes,
            "ai_resolved": measured.ai_resolved,
            "escalated": measured.escalated,
            "app_connections": measured.app_connections,
        }
        size = pool.value if pool is not None else None
        replicas = instance.num_replicas if instance is not None else None
        values["db_connections"] = app_pool_pct(
            measured.app_connections, int(size) if size and size.isdigit() else None, replicas
        )
    signals = WatchSignals(
        values=values, unavailable=unavailable, environment=get_settings().environment
    )
    return signals, counts


async def _remember(
    s: WatchSignals, levels: dict[str, str], alert: dict[str, Any] | None, dry_run: bool
) -> metric_samples.Sample | None:
    """Record this run's sample and read the previous one (a dry run only reads). The ops
    database being down costs the trend and the resolution, never the watch: it runs every
    minute and must not page every minute about its own bookkeeping."""
    try:
        async with await opsdb.connect() as conn:
            if dry_run:
                return await metric_samples.latest(conn, s.environment)
            return await metric_samples.record(conn, s.environment, s.values, levels, alert)
    except (psycopg.Error, OSError) as exc:
        get_run_logger().warning("ops database unavailable (%s): no trend", type(exc).__name__)
        return None


async def _raise(alert: dict[str, Any]) -> str:
    """Through the intake like any alert; if the intake cannot take it, tell a human directly."""
    what = f"{alert['status']} {alert['dedup_key']}"
    try:
        raised = await intake_client.raise_alert(alert)
    except RunbookError as exc:
        get_run_logger().warning("could not raise the alert through the intake: %s", exc)
        text = f"Key-metrics watch (intake unreachable: {exc}): {alert['summary']}"
        if alert["status"] == "firing" and alert["severity"] == "critical":
            await page(text, {"incident": alert["dedup_key"], "flow": SOURCE})
        elif alert["status"] == "firing":
            await notify(text)
        return f"{what}: intake unreachable, told directly"
    return f"{what}: {raised.status} {', '.join(raised.incidents)}".strip()


async def _publish(readings: list[Reading], window_s: int, status: str, ms: float) -> None:
    await acreate_table_artifact(
        key="key-metrics",
        table=[
            {
                "metric": r.label,
                "value": "no data" if r.value is None else f"{r.value:g} {r.unit}",
                "warning": f"{r.direction} {r.warn:g}",
                "critical": f"{r.direction} {r.critical:g}",
                "level": r.level,
                "trend": r.trend,
            }
            for r in readings
        ],
        description=f"Key metrics over the last {window_s} s — **{status}** ({ms:.0f} ms)",
    )


@flow(
    name="metrics-watch",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def metrics_watch(
    dry_run: bool = False, window_s: int | None = None, until: datetime | None = None
) -> WatchResult:
    """Runbook "Key Metrics to Watch", every minute: error rate, P99 latency, automation and
    escalation rate, DB connections (% of the app's pool), each against the Policy's levels. A
    breach is raised as one alert through the intake: warnings notify, criticals remediate. The
    table artifact shows every metric, its levels and its trend.

    Args:
        dry_run: Measure and decide; raise nothing, record nothing
        window_s: Measure over this many seconds (default: the Policy's metrics_window_s)
        until: End of the window (default: now) — a rehearsal or a test's fixed clock
    """
    started = time.perf_counter()
    policy, db, rw = await asyncio.gather(
        Policy.resolve(), AppDatabase.resolve(), Railway.resolve()
    )
    window = window_s or policy.metrics_window_s
    signals, counts = await observe(db, rw, window, until)
    decision = decide(signals, policy)
    levels: dict[str, str] = {r.metric: r.level for r in decision.readings}
    previous = await _remember(signals, levels, decision.alert, dry_run)
    before = previous.metrics if previous else {}
    readings = [
        r.model_copy(update={"trend": trend(r.value, before.get(r.metric))})
        for r in decision.readings
    ]
    alerts = [a for a in (resolution(previous.alert if previous else None, decision.alert),) if a]
    alerts += [decision.alert] if decision.alert else []
    raised = [] if dry_run else [await _raise(a) for a in alerts]
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    worst = max((r.level for r in readings), key=["ok", "no data", "warn", "critical"].index)
    await _publish(readings, window, worst, elapsed)
    get_run_logger().info("%s: %s", decision.act, decision.why)
    return WatchResult(
        act=decision.act,
        why=decision.why,
        readings=readings,
        counts=counts,
        raised=raised or [f"would raise {a['status']} {a['dedup_key']}" for a in alerts],
        elapsed_ms=elapsed,
        dry_run=dry_run,
    )
