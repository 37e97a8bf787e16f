"""Runbook "Maintenance Windows" → Emergency Maintenance: notify customers immediately, keep the
window minimal, post an incident report after.

An operator starts it with a reason (`runbook run emergency-maintenance --param reason="..."
--param steps='["redeploy"]'`). Customers are told at once — a status page incident with every
component `under_maintenance` (Statuspage emails its subscribers), the ops mailbox and Slack —
then the window runs like the Sunday one (flows/maintenance.py: maintenance mode on and the
window row, the steps asked for, each with its usual approval, verify health, restore service
first on any failure), bounded by `max_minutes` and the Policy's `emergency_max_minutes`. The
window closes the moment service is restored; the status page incident is resolved and the
incident report artifact (`maintenance-report-…`: timeline, what changed, duration) stays on
the run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import Field

from flows.incident import IncidentRun, RemediationResult
from flows.maintenance import run_window
from flows.maintenance_plan import ACT_ACTIONS as ACT_ACTIONS
from flows.maintenance_plan import OTHER_ACTS as OTHER_ACTS
from flows.maintenance_plan import Act as Act
from flows.maintenance_plan import Clock, Step, plan_steps
from flows.maintenance_run import MaintenanceRun, flow_run_id, load_targets, observe
from flows.notifications import page_failed_run
from flows.scaling import operator_flow
from runbook.maintenance import Window
from runbook.plan import ActionName, spec
from runbook.policy import MaintenanceStep


def no_approval_ahead(step: Step) -> None:
    """An emergency has no notice: every destructive step asks in the window."""
    return None


@operator_flow(
    name="emergency-maintenance",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def emergency_maintenance(
    reason: Annotated[str, Field(min_length=3, max_length=300)],
    steps: list[MaintenanceStep] | None = None,
    max_minutes: Annotated[int, Field(ge=5, le=240)] = 30,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RemediationResult:
    """Runbook "Maintenance Windows" → Emergency Maintenance: tell customers at once (status
    page + email), maintenance mode on for as short as possible, the steps asked for (each with
    its approval), verify health, restore service, resolve the status page; an incident report
    (timeline, what changed, duration) is left on the run.

    Args:
        reason: Why (customers and the report see it)
        steps: Updates to perform, in order: migrations, redeploy, rds_pending, vacuum
            (default: redeploy)
        max_minutes: The window never lasts longer (the Policy's emergency_max_minutes caps it)
        dry_run: Plan and record what would be done; change nothing, tell no customer
        now: The clock (default: now) — a rehearsal or a test
    """
    clock = Clock(now)
    t = await load_targets()
    policy = t.policy
    start = clock.now()
    minutes = min(max_minutes, policy.emergency_max_minutes)
    window = Window(start=start, end=start + timedelta(minutes=minutes))
    run_id = flow_run_id()
    run = await IncidentRun.start(
        "emergency-maintenance", f"emergency-{window.key}-{run_id[:8] or 'direct'}", dry_run
    )
    run.keep_process = True  # a window never exits mid-way to wait for an approval
    mr = MaintenanceRun(run, t, clock, window, "emergency", reason)
    plan = plan_steps(await observe(t), policy, steps or ["redeploy"])
    await run.seen(f"emergency maintenance ({reason}), at most {minutes} min")
    work = "; ".join(s.why for s in plan if s.spec is not None) or "checks"
    if t.page.page_id:
        params = {
            "name": "Emergency maintenance",
            "body": f"We are performing emergency maintenance: {reason}. The support assistant"
            f" is unavailable for at most {minutes} minutes.",
            "status": "identified",
            "impact": "minor",
            "component_status": "under_maintenance",
        }
        why = f"emergency maintenance: {reason}"
        posted = await mr.act(
            spec(policy, ActionName.OPEN_STATUS_INCIDENT, t.status_target, why, params)
        )
        found = posted.outcome.get("status_incident")
        mr.status_incident = str(found) if found else None
    else:
        await mr.log("status page", "the customer status page is not configured")
    await mr.tell(
        f"Emergency maintenance starts now ({reason}), at most {minutes} min: {work}",
        subject=f"Emergency maintenance: {reason}",
    )
    return await run_window(mr, plan, no_approval_ahead, "Emergency maintenance")
