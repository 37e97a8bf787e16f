"""The maintenance window's rules as tables (pure, no services): when a window is, what it
plans, whether a step still fits, whether health verified, how a window ended, the report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.maintenance import preapprovable, step_scope
from flows.maintenance_plan import (
    NO_MIGRATION_PROJECT,
    ReportLine,
    StepResult,
    WindowSignals,
    outcome,
    plan_steps,
    render_report,
    time_verdict,
    verify_health,
)
from runbook.actions import ActionClass
from runbook.domain import CheckResult, HealthReport, Status
from runbook.maintenance import next_window, window_of
from runbook.plan import ActionName
from runbook.policy import MAINTENANCE_STEPS, PolicyRules

pytestmark = pytest.mark.unit
POLICY = PolicyRules()
SUNDAY = datetime(2031, 1, 5, tzinfo=UTC)
SIGNALS = WindowSignals(
    railway_target="railway:svc",
    live_deployment="dep-7",
    live_commit="abc1234",
    rds_target="rds:db",
    rds_class="db.t3.medium",
    rds_pending="db.t3.large",
    largest_tables=("public.messages", "public.conversations"),
)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (SUNDAY + timedelta(hours=2), True),  # the schedule fires: 02:00-04:00
        (SUNDAY + timedelta(hours=3, minutes=59), True),
        (SUNDAY + timedelta(hours=4), False),  # the window is over
        (SUNDAY + timedelta(hours=1, minutes=59), False),
    ],
)
def test_the_window_ends_at_the_policys_end_time(moment: datetime, inside: bool) -> None:
    window = window_of(moment, "04:00", 120)
    assert (window is not None) is inside
    if window is not None:
        assert (window.start, window.end) == (
            SUNDAY + timedelta(hours=2),
            SUNDAY + timedelta(hours=4),
        )


def test_the_notice_announces_the_window_48_hours_ahead() -> None:
    friday = SUNDAY - timedelta(days=2) + timedelta(hours=2)
    window = window_of(friday + timedelta(hours=48), "04:00", 120)
    assert window is not None and window.start == SUNDAY + timedelta(hours=2)
    later = next_window(SUNDAY + timedelta(hours=5), "04:00", 120)
    assert later.start == SUNDAY + timedelta(days=1, hours=2)


def test_the_plan_lists_every_update_in_the_policys_order_with_its_exact_act() -> None:
    steps = plan_steps(SIGNALS, POLICY, MAINTENANCE_STEPS)
    assert [s.name for s in steps] == ["migrations", "redeploy", "rds_pending", "vacuum"]
    migrations, redeploy, rds, vacuum = steps
    assert migrations.spec is None and migrations.why == NO_MIGRATION_PROJECT  # the hook
    assert redeploy.spec is not None and redeploy.spec.action is ActionName.REDEPLOY_SERVICE
    assert redeploy.spec.params == {"commit": "abc1234"}
    assert redeploy.spec.action_class is ActionClass.DESTRUCTIVE
    assert rds.spec is not None and rds.spec.params["instance_class"] == "db.t3.large"
    assert rds.spec.action_class is ActionClass.DESTRUCTIVE
    assert vacuum.spec is not None and vacuum.spec.action_class is ActionClass.SAFE
    assert vacuum.spec.params["tables"] == ["public.messages", "public.conversations"]


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        ({"migration_project": True, "migration_target": "0002", "migration_to_apply": ()}, None),
        (
            {
                "migration_project": True,
                "migration_target": "0002",
                "migration_to_apply": ("0002",),
                "staging_applied": ("0001",),
            },
            None,  # staging first: not there yet
        ),
        (
            {
                "migration_project": True,
                "migration_target": "0002",
                "migration_to_apply": ("0002",),
                "migration_from": "0001",
                "staging_applied": ("0001", "0002"),
            },
            "0002",
        ),
    ],
)
def test_pending_migrations_are_applied_only_once_staging_is_at_them(
    signals: dict[str, object], expected: str | None
) -> None:
    step = plan_steps(SIGNALS.model_copy(update=signals), POLICY, ["migrations"])[0]
    if expected is None:
        assert step.spec is None and step.why
        return
    assert step.spec is not None and step.spec.action is ActionName.MIGRATION_UPGRADE
    assert step.spec.params["revision"] == expected


def test_nothing_pending_plans_no_act_and_says_why() -> None:
    bare = WindowSignals()
    steps = plan_steps(bare, POLICY, MAINTENANCE_STEPS)
    assert all(s.spec is None for s in steps)
    assert [s.why for s in steps][1:] == [
        "no live deployment to redeploy",
        "no pending RDS modification (the database is not on RDS)",
        "no tables to vacuum",
    ]


def test_only_destructive_steps_the_policy_names_are_approved_at_notice_time() -> None:
    steps = plan_steps(SIGNALS, POLICY, MAINTENANCE_STEPS)
    assert [s.name for s in preapprovable(steps, POLICY.maintenance_preapprove)] == [
        "redeploy",
        "rds_pending",
    ]
    assert [s.name for s in preapprovable(steps, ["redeploy"])] == ["redeploy"]
    assert preapprovable(steps, ["vacuum"]) == []  # safe: never needs an approval


def test_an_approval_given_ahead_is_bound_to_the_exact_step() -> None:
    now = plan_steps(SIGNALS, POLICY, ["redeploy"])[0]
    later = plan_steps(SIGNALS.model_copy(update={"live_commit": "def5678"}), POLICY, ["redeploy"])
    assert now.spec is not None and later[0].spec is not None
    assert step_scope(now.spec) == step_scope(now.spec)
    assert step_scope(now.spec) != step_scope(later[0].spec)  # a new build: ask again


@pytest.mark.parametrize(
    ("budget", "left", "reserve", "fits"),
    [
        (900, 1800, 600, True),
        (900, 1500, 600, True),  # fits exactly
        (900, 1499, 600, False),
        (1800, 1799, 600, False),
        (60, 0, 600, False),
    ],
)
def test_a_step_starts_only_when_it_and_the_restore_fit_before_the_window_ends(
    budget: int, left: float, reserve: int, fits: bool
) -> None:
    ok, why = time_verdict(budget, left, reserve)
    assert ok is fits
    assert ("restore service" in why) is not fits


def _check(name: str, status: Status) -> CheckResult:
    return CheckResult(name=name, component="api", status=status, summary=status.value)


@pytest.mark.parametrize(
    ("checks", "ok"),
    [
        (
            [("api_health", Status.OK), ("api_ready", Status.OK), ("pg_table_sizes", Status.WARN)],
            True,
        ),
        ([("api_health", Status.OK), ("api_ready", Status.UNAVAILABLE)], False),
        (
            [("api_health", Status.OK), ("api_ready", Status.OK), ("redis_ping", Status.CRITICAL)],
            False,
        ),
    ],
)
def test_health_verifies_only_with_the_api_up_and_nothing_critical(
    checks: list[tuple[str, Status]], ok: bool
) -> None:
    report = HealthReport(checks=tuple(_check(n, s) for n, s in checks))
    assert verify_health(report)[0] is ok


@pytest.mark.parametrize(
    ("results", "healthy", "restored", "decision", "paged"),
    [
        ([("redeploy", "done"), ("vacuum", "done")], True, True, "completed", False),
        ([("redeploy", "failed")], None, True, "failed", True),
        ([("redeploy", "done"), ("rds_pending", "out_of_time")], None, True, "out_of_time", True),
        ([("redeploy", "done")], False, True, "unhealthy", True),
        ([("redeploy", "rejected"), ("vacuum", "done")], True, True, "incomplete", False),
        ([("redeploy", "done")], True, False, "restore_failed", True),
    ],
)
def test_how_a_window_ended_and_who_is_paged(
    results: list[tuple[str, str]],
    healthy: bool | None,
    restored: bool,
    decision: str,
    paged: bool,
) -> None:
    steps = [StepResult(name=n, status=s) for n, s in results]  # type: ignore[arg-type]
    got, page, summary = outcome(steps, healthy, restored)
    assert (got, page) == (decision, paged)
    assert summary


def test_the_report_has_the_timeline_what_changed_and_the_duration() -> None:
    at = SUNDAY + timedelta(hours=2)
    lines = [ReportLine(at=at, step="enable", what="maintenance mode on")]
    markdown = render_report(
        "Emergency maintenance",
        "hotfix",
        lines,
        ["API redeployed"],
        at,
        at + timedelta(minutes=7, seconds=30),
        "completed",
    )
    assert "**Duration:** 7.5 min" in markdown
    assert "| 02:00:00 | enable | maintenance mode on |" in markdown
    assert "## What changed" in markdown and "- API redeployed" in markdown


def test_runbook_status_shows_the_open_window_and_the_next_one_with_its_notice() -> None:
    from runbook.cli.safety import window_lines
    from runbook.maintenance import Notice, WindowRow

    start = SUNDAY + timedelta(hours=2)
    open_row = WindowRow(
        id=1,
        starts_at=start,
        ends_at=start + timedelta(hours=2),
        reason="scheduled maintenance",
        kind="scheduled",
        flow_run_id="r",
        incident_id="i",
        closed_at=None,
    )
    notice = Notice(
        window_start=start + timedelta(weeks=1),
        window_end=start + timedelta(weeks=1, hours=2),
        noticed_at=start + timedelta(days=5),
        flow_run_id=None,
        status_incident="sp-1",
        plan=[],
        notified_at=None,
        approved_scopes=["redeploy_service|x"],
        approved_by=["alice"],
        approved_at=start + timedelta(days=5),
    )
    now, nxt = window_lines(open_row, notice, start + timedelta(weeks=1), POLICY)
    assert now.startswith("MAINTENANCE WINDOW OPEN (scheduled") and "alerts are suppressed" in now
    assert nxt == (
        "next maintenance window: Sun 2031-01-12 02:00-04:00 UTC (notice posted Fri 02:00 UTC;"
        " steps approved ahead by alice)"
    )
    idle, unnoticed = window_lines(None, None, start + timedelta(weeks=2), POLICY)
    assert idle == "maintenance window: none open (alerts are not suppressed)"
    assert unnoticed.endswith("(notice not posted yet)")
