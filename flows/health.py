"""Runbook section "Health Checks": service status, database and Redis.

The reusable verify step of every other flow: it observes, it never changes anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from blocks.app_database import AppDatabase
from blocks.app_redis import AppRedis
from blocks.policy import Policy
from blocks.support_api import SupportApi
from flows.notifications import page, page_failed_run
from runbook.domain import CheckResult, HealthReport, Status
from runbook.errors import RunbookError
from tasks import intake_client, postgres, redis, support_api


def _checks(
    api: SupportApi, db: AppDatabase, cache: AppRedis, policy: Policy
) -> list[tuple[Callable[..., Awaitable[CheckResult]], tuple[Any, ...]]]:
    return [
        (support_api.get_api_health, (api,)),
        (support_api.get_api_readiness, (api,)),
        (support_api.get_api_response_time, (api, policy)),
        (postgres.get_pg_connections, (db, policy)),
        (postgres.get_pg_connections_by_state, (db, policy)),
        (postgres.get_pg_slow_queries, (db, policy)),
        (postgres.get_pg_table_sizes, (db,)),
        (redis.get_redis_ping, (cache,)),
        (redis.get_redis_memory, (cache, policy)),
        (redis.get_redis_keys, (cache,)),
        (redis.get_redis_latency, (cache, policy)),
    ]


async def collect_health(
    api: SupportApi, db: AppDatabase, cache: AppRedis, policy: Policy, *, as_tasks: bool = True
) -> HealthReport:
    """Run every check concurrently. `as_tasks=False` runs the plain functions (no Prefect API),
    which is what `runbook check` does so that it answers in about a second at 3 AM."""
    calls = [
        (check if as_tasks else check.fn)(*args)  # type: ignore[attr-defined]
        for check, args in _checks(api, db, cache, policy)
    ]
    started = time.perf_counter()
    results = await asyncio.gather(*calls)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return HealthReport(checks=tuple(results), elapsed_ms=elapsed_ms)


async def load_targets() -> tuple[SupportApi, AppDatabase, AppRedis, Policy]:
    """The environment's blocks (or `RUNBOOK_*` settings), loaded concurrently."""
    api, db, cache, policy = await asyncio.gather(
        SupportApi.resolve(), AppDatabase.resolve(), AppRedis.resolve(), Policy.resolve()
    )
    return api, db, cache, policy


@flow(
    name="health-check",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def health_check(dry_run: bool = False) -> HealthReport:
    """Runbook "Health Checks": API /health, /health/ready and response time; Postgres
    connections, states, slow statements, table sizes; Redis ping, memory, keys and latency.

    Read-only (`dry_run` changes nothing because nothing is ever changed)."""
    api, db, cache, policy = await load_targets()
    report = await collect_health(api, db, cache, policy)
    await acreate_table_artifact(
        key="health-report",
        table=[
            {
                "check": c.name,
                "component": c.component,
                "status": c.status.value,
                "summary": c.summary,
                "ms": round(c.duration_ms),
            }
            for c in report.checks
        ],
        description=(
            f"Health report — overall **{report.status.value}**,"
            f" {len(report.checks)} checks in {report.elapsed_ms:.0f} ms"
        ),
    )
    if (report.status is Status.CRITICAL or unreachable(report)) and not dry_run:
        await open_incident(report)
    return report


def unreachable(report: HealthReport) -> list[str]:
    """Components none of whose (non-optional) checks could observe anything: the app's Redis
    or Postgres down, the API not answering. That is an outage, not a gap in the report — one
    check alone being unavailable (a permission, an extension) is not."""
    by_component: dict[str, list[Any]] = {}
    for check in report.checks:
        if not check.details.get("optional"):
            by_component.setdefault(check.component, []).append(check)
    return sorted(
        component
        for component, checks in by_component.items()
        if checks and all(c.status is Status.UNAVAILABLE for c in checks)
    )


def critical_alert(report: HealthReport) -> dict[str, Any]:
    """The generic-format alert a critical report raises (critical checks, and every check of a
    component that cannot be reached): one dedup key per set of failing checks, so the intake
    coalesces repeats of the same failure into one incident."""
    down = set(unreachable(report))
    failing = sorted(
        [c for c in report.checks if c.status is Status.CRITICAL or c.component in down],
        key=lambda c: c.name,
    )
    names = [c.name for c in failing]
    return {
        "source": "health-check",
        "name": "HealthCheckCritical",
        "severity": "critical",
        "status": "firing",
        "summary": "health checks critical: "
        + "".join(f"{component} unreachable; " for component in sorted(down))
        + "; ".join(f"{c.component} {c.name}: {c.summary}" for c in failing)[:900],
        "dedup_key": "health-check:" + ",".join(names),
        "labels": {"component": ",".join(sorted({c.component for c in failing}))},
    }


async def open_incident(report: HealthReport) -> None:
    """A critical health check opens an incident through the intake, like any alert (routed,
    deduplicated, suppressed in maintenance). If the intake cannot take it, page directly."""
    alert = critical_alert(report)
    try:
        raised = await intake_client.raise_alert(alert)
    except RunbookError as exc:
        get_run_logger().warning("could not raise the alert through the intake: %s", exc)
        await page(
            f"Health check critical (intake unreachable: {exc}): {alert['summary']}",
            {"incident": alert["dedup_key"], "flow": "health-check"},
        )
        return
    get_run_logger().info("critical health check raised as incident(s) %s", raised.incidents)
