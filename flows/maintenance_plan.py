"""Runbook "Maintenance Windows": what a window does and the verdicts on it — pure functions.

    plan_steps(signals, policy, steps)  → the updates, each an `ActSpec` or a no-op with its why
    time_verdict(budget, left, reserve)  → may this step still start before the window ends?
    verify_health(report)                → the window's "Verify health" step
    outcome(results, healthy, restored)  → how the window ended, and whether a human is paged
    render_report(…)                     → the incident report (timeline, what changed, duration)

The updates (Policy `maintenance_steps`, in order): `migrations` (pending Alembic migrations
of the production database, to the revision staging is already verified at — staging first, as
db-migrate does; a no-op saying why when no migration project is configured, nothing is pending
or staging is not there yet), `redeploy` (the latest build, `railway redeploy`), `rds_pending`
(pending RDS modifications such as a deferred resize, applied now), `vacuum` (`VACUUM (ANALYZE)`
of the largest tables). A step starts only when its budget (`maintenance_step_budget_s`) plus the
restore reserve still fits before the window ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from runbook.domain import HealthReport, Status
from runbook.plan import MAINTENANCE_VARIABLE, ActionName, ActSpec, spec
from runbook.policy import MaintenanceStep, PolicyRules

Act = Literal[
    "announce",  # the notice: a scheduled maintenance on the status page
    "start_status",  # the window starts: the status page entry goes in progress
    "open_status",  # an emergency: customers told at once
    "enable_maintenance",
    "migrations",
    "redeploy",
    "rds_pending",
    "vacuum",
    "disable_maintenance",
    "complete_status",
    "resolve_status",
    "skip",  # out of time, or another window is open
    "escalate",
    "none",
]
# the acts that change the platform (flows/acts.py); the others only tell people
ACT_ACTIONS: dict[str, ActionName] = {
    "announce": ActionName.SCHEDULE_STATUS_MAINTENANCE,
    "start_status": ActionName.UPDATE_STATUS_INCIDENT,
    "open_status": ActionName.OPEN_STATUS_INCIDENT,
    "enable_maintenance": ActionName.ENABLE_MAINTENANCE_MODE,
    "redeploy": ActionName.REDEPLOY_SERVICE,
    "migrations": ActionName.MIGRATION_UPGRADE,
    "rds_pending": ActionName.APPLY_PENDING_DB_MODIFICATIONS,
    "vacuum": ActionName.VACUUM_ANALYZE,
    "disable_maintenance": ActionName.DISABLE_MAINTENANCE_MODE,
    "complete_status": ActionName.COMPLETE_STATUS_MAINTENANCE,
    "resolve_status": ActionName.RESOLVE_STATUS_INCIDENT,
}
OTHER_ACTS = frozenset({"skip", "escalate", "none"})
NO_MIGRATION_PROJECT = "no migration project configured"
StepStatus = Literal["done", "noop", "rejected", "failed", "out_of_time", "planned"]


class Clock:
    """The window's clock: the real one, or an injected start (a rehearsal, a test) that then
    advances with real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.injected = start is not None
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._real = datetime.now(UTC)

    def now(self) -> datetime:
        return self._start + (datetime.now(UTC) - self._real)


class WindowSignals(BaseModel):
    """What the updates need to know, read before the window starts (and at notice time)."""

    model_config = ConfigDict(frozen=True)

    railway_target: str = "railway:api"
    live_deployment: str | None = None
    live_commit: str | None = None
    rds_target: str | None = None  # None: the database is not on RDS (or not readable)
    rds_status: str | None = None
    rds_class: str | None = None
    rds_pending: str | None = None
    db_target: str = "postgres:app"
    largest_tables: tuple[str, ...] = ()
    # the app's Alembic project (tasks/migrations.py): production against its scripts, and
    # what staging has applied (None: staging not readable or not configured)
    migration_project: bool = False
    migration_error: str | None = None
    migration_database: str | None = None
    migration_target: str | None = None
    migration_to_apply: tuple[str, ...] = ()
    migration_from: str = "base"
    staging_applied: tuple[str, ...] | None = None


class Step(BaseModel):
    """One planned update: an act (`spec`), or nothing to do (`spec` None, `why` says why)."""

    model_config = ConfigDict(frozen=True)

    name: MaintenanceStep
    why: str
    budget_s: int
    spec: ActSpec | None = None


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: StepStatus
    detail: str = ""


def maintenance_mode(policy: PolicyRules, target: str, on: bool, why: str) -> ActSpec:
    """MAINTENANCE_MODE=true (undone by =false) or =false."""
    value, back = ("true", "false") if on else ("false", "true")
    action = ActionName.ENABLE_MAINTENANCE_MODE if on else ActionName.DISABLE_MAINTENANCE_MODE
    undo = {MAINTENANCE_VARIABLE: back} if on else None
    return spec(policy, action, target, why, {MAINTENANCE_VARIABLE: value}, undo)


def migration_step(s: WindowSignals, policy: PolicyRules) -> Step:
    """Pending Alembic migrations of production (`alembic upgrade <revision>`, the action
    db-migrate performs), only to a revision staging has applied already."""
    budget = policy.step_budget_s("migrations")

    def noop(why: str) -> Step:
        return Step(name="migrations", why=why, budget_s=budget)

    if not s.migration_project:
        return noop(NO_MIGRATION_PROJECT)
    if s.migration_error or not s.migration_target:
        return noop(f"migration state unreadable: {s.migration_error or 'no single head'}")
    target = s.migration_target
    if not s.migration_to_apply:
        return noop(f"no pending migrations (the database is at {s.migration_from})")
    if s.staging_applied is None or target not in s.staging_applied:
        return noop(
            f"{target} is pending but staging is not at it yet (db-migrate migrates staging"
            " first): not applied in the window"
        )
    why = (
        f"apply the pending migrations {' → '.join(s.migration_to_apply)} (staging is at {target})"
    )
    params = {
        "environment": "production",
        "database": s.migration_database,
        "revision": target,
        "from": s.migration_from,
    }
    change = spec(policy, ActionName.MIGRATION_UPGRADE, "app-db", why, params)
    return Step(name="migrations", why=why, budget_s=budget, spec=change)


def plan_steps(
    s: WindowSignals, policy: PolicyRules, steps: Sequence[MaintenanceStep]
) -> tuple[Step, ...]:
    """The updates in the Policy's order, each with the exact act it would perform."""
    planned: list[Step] = []
    for name in steps:
        budget = policy.step_budget_s(name)
        if name == "migrations":
            planned.append(migration_step(s, policy))
        elif name == "redeploy":
            if not s.live_deployment:
                planned.append(
                    Step(name=name, why="no live deployment to redeploy", budget_s=budget)
                )
                continue
            why = f"redeploy the latest build (commit {s.live_commit or 'unknown'})"
            params: dict[str, Any] = {"commit": s.live_commit or s.live_deployment}
            change = spec(policy, ActionName.REDEPLOY_SERVICE, s.railway_target, why, params)
            planned.append(Step(name=name, why=why, budget_s=budget, spec=change))
        elif name == "rds_pending":
            if not s.rds_target or not s.rds_pending:
                what = "the database is not on RDS" if not s.rds_target else "nothing pending"
                planned.append(
                    Step(name=name, why=f"no pending RDS modification ({what})", budget_s=budget)
                )
                continue
            why = f"apply the pending RDS change {s.rds_class} → {s.rds_pending} (deferred)"
            params = {"instance_class": s.rds_pending, "from": s.rds_class}
            change = spec(
                policy, ActionName.APPLY_PENDING_DB_MODIFICATIONS, s.rds_target, why, params
            )
            planned.append(Step(name=name, why=why, budget_s=budget, spec=change))
        else:  # vacuum
            if not s.largest_tables:
                planned.append(Step(name=name, why="no tables to vacuum", budget_s=budget))
                continue
            tables = list(s.largest_tables)
            why = f"VACUUM (ANALYZE) of the {len(tables)} largest tables: {', '.join(tables)}"
            params = {"tables": tables, "timeout_s": budget}
            change = spec(policy, ActionName.VACUUM_ANALYZE, s.db_target, why, params)
            planned.append(Step(name=name, why=why, budget_s=budget, spec=change))
    return tuple(planned)


def time_verdict(budget_s: float, left_s: float, reserve_s: float) -> tuple[bool, str]:
    """May a step that takes up to `budget_s` start with `left_s` left in the window, keeping
    `reserve_s` to verify and restore service? (Pure; "fits exactly" fits.)"""
    need = budget_s + reserve_s
    left = f"{max(left_s, 0) / 60:.0f} min left"
    if left_s >= need:
        return True, f"{left}, the step needs up to {budget_s / 60:.0f} min"
    return False, (
        f"only {left}: the step needs up to {budget_s / 60:.0f} min plus {reserve_s / 60:.0f} min"
        " to verify and restore service before the window ends"
    )


def verify_health(report: HealthReport) -> tuple[bool, str]:
    """The window's "Verify health": no check critical, and the API answers /health and
    /health/ready (a check that cannot observe its target is not counted as healthy)."""
    critical = [c for c in report.checks if c.status is Status.CRITICAL]
    api = [c for c in report.checks if c.name in {"api_health", "api_ready"}]
    down = [c for c in api if c.status is not Status.OK]
    bad = critical + [c for c in down if c not in critical]
    if not bad:
        return True, f"health checks pass ({len(report.checks)} checks, none critical)"
    return False, "health checks fail: " + "; ".join(f"{c.name}: {c.summary}" for c in bad)


def outcome(
    results: Sequence[StepResult], healthy: bool | None, restored: bool
) -> tuple[str, bool, str]:
    """(decision, page a human?, summary) of a window — pure. Restoring service failed, a step
    failed, time ran out or health did not verify: page. An approval said no: report only."""
    by = {
        status: [r.name for r in results if r.status == status] for status in get_args(StepStatus)
    }
    done = ", ".join(by["done"] + by["planned"]) or "no update"
    if not restored:
        return (
            "restore_failed",
            True,
            f"service NOT restored (maintenance mode may still be on); done: {done}",
        )
    if by["failed"]:
        return (
            "failed",
            True,
            f"{', '.join(by['failed'])} failed: service restored first; done: {done}",
        )
    if by["out_of_time"]:
        return (
            "out_of_time",
            True,
            f"ran out of window: skipped {', '.join(by['out_of_time'])}; service restored;"
            f" done: {done}",
        )
    if healthy is False:
        return (
            "unhealthy",
            True,
            f"health did not verify after the updates; service restored; done: {done}",
        )
    if by["rejected"]:
        return "incomplete", False, f"not approved: {', '.join(by['rejected'])}; done: {done}"
    return "completed", False, f"completed; done: {done}"


class ReportLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    step: str
    what: str


def render_report(
    title: str,
    reason: str,
    lines: Sequence[ReportLine],
    changes: Sequence[str],
    opened: datetime | None,
    closed: datetime | None,
    verdict: str,
) -> str:
    """The incident report: what happened when, what changed, how long customers waited."""
    duration = "maintenance mode was never switched on"
    if opened is not None:
        end = closed or (lines[-1].at if lines else opened)
        minutes = max((end - opened) / timedelta(minutes=1), 0.0)
        duration = f"{minutes:.1f} min (maintenance mode {opened:%H:%M:%S} → " + (
            f"{closed:%H:%M:%S} UTC)" if closed else "still on!)"
        )
    out = [f"# {title}", "", f"**Reason:** {reason}", "", f"**Outcome:** {verdict}", ""]
    out += [f"**Duration:** {duration}", "", "## Timeline", "", "| time (UTC) | step | what |"]
    out.append("|---|---|---|")
    out += [
        f"| {x.at:%H:%M:%S} | {x.step} | {x.what.replace('|', '/').replace(chr(10), ' ')} |"
        for x in lines
    ] or ["| | | nothing recorded |"]
    out += ["", "## What changed", ""]
    out += [f"- {c}" for c in changes] or ["- nothing"]
    return "\n".join(out)
