"""Runbook "Maintenance Windows" → Scheduled Maintenance: Sundays 02:00-04:00 UTC, 48 h notice.

* `maintenance-notice` (Fridays 02:00 UTC, `prefect.yaml`): announces the window 48 hours ahead
  — Slack, the ops mailbox and a Statuspage scheduled maintenance (`scheduled_for` /
  `scheduled_until`, subscribers notified) — with the updates planned, and asks once for the
  approval of the destructive ones the Policy lets be approved ahead (`maintenance_preapprove`).
  That approval is bound to the exact steps (one scope per step: action, target, parameters).
* `scheduled-maintenance` (`0 2 * * 0`, UTC): the runbook's five steps — (1) post that
  maintenance starts, (2) maintenance mode on (`MAINTENANCE_MODE=true` and the window row the
  intake suppresses alerts with), (3) the updates in the Policy (`maintenance_steps`), (4) verify
  health, (5) maintenance mode off and post completion. Everything ends before the window does
  (`maintenance_window_end_utc`, 04:00): a step starts only if it and the restore still fit;
  otherwise the rest are skipped, service is restored and a human is paged. Any failure
  restores service first, then pages. A destructive step asks for its approval in the window
  unless it was approved at notice time for exactly what it is about to do.

Both take `now` (default: the real clock): an injected clock for rehearsals and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prefect import flow

from flows.approval import request_approval
from flows.incident import IncidentRun, RemediationResult
from flows.maintenance_plan import (
    ACT_ACTIONS as ACT_ACTIONS,
)
from flows.maintenance_plan import (
    OTHER_ACTS as OTHER_ACTS,
)
from flows.maintenance_plan import (
    Act as Act,
)
from flows.maintenance_plan import (
    Clock,
    Step,
    StepResult,
    outcome,
    plan_steps,
)
from flows.maintenance_run import (
    DONE,
    MaintenanceRun,
    StepApprover,
    Targets,
    flow_run_id,
    load_targets,
    observe,
    tell,
)
from flows.notifications import page_failed_run
from runbook import approvals, maintenance, opsdb
from runbook.actions import ActionClass, ActionRequest
from runbook.approval import scope
from runbook.maintenance import Notice, Window
from runbook.plan import ActionName, ActSpec, spec
from runbook.safety import Approval, ApprovalCode, Approver
from runbook.settings import get_settings

PLAN_ACTION = "approve_maintenance_plan"  # approved at notice time; never performed itself


def step_scope(change: ActSpec) -> str:
    """What an approval of this step approves (runbook.approval.scope of its exact act)."""
    request = ActionRequest(
        incident_id="-", action=change.action.value, target=change.target, params=change.params
    )
    return scope(request)


def preapprovable(steps: Sequence[Step], preapprove: Sequence[str]) -> list[Step]:
    """Destructive steps the Policy lets be approved at notice time."""
    return [
        s
        for s in steps
        if s.spec is not None
        and s.name in preapprove
        and s.spec.action_class is ActionClass.DESTRUCTIVE
    ]


def approver_for(notice: Notice | None, preapprove: Sequence[str]) -> StepApprover:
    """The step's approval given at notice time, if it approved exactly this act and the Policy
    still lets this step be approved ahead; else None (the step asks in the window)."""

    def pick(step: Step) -> Approver | None:
        if notice is None or notice.approved_at is None or step.spec is None:
            return None
        if step.name not in preapprove:
            return None
        if step_scope(step.spec) not in notice.approved_scopes:
            return None
        who = ", ".join(notice.approved_by)

        async def approve(request: ActionRequest) -> Approval:
            if scope(request) not in notice.approved_scopes:  # not what was approved: ask
                return await request_approval(request, keep_process=True)
            real = datetime.now(UTC)
            in_window = notice.window_start <= real < notice.window_end
            if not in_window and not get_settings().allow_clock_override:
                # a run started with `now=` (anyone with Prefect API access can) outside the
                # real window: the notice's approval does not travel with it
                return await request_approval(request, keep_process=True)
            async with await opsdb.connect() as conn:
                first = await maintenance.consume_approval(
                    conn, notice.window_start, scope(request)
                )
            if not first:  # used already (a second run in this window, a replay): ask again
                return await request_approval(request, keep_process=True)
            return Approval(
                approved=True,
                approvers=list(notice.approved_by),
                reason=f"approved at notice time ({notice.approved_at:%a %H:%M} UTC) by {who}"
                " for this exact step of this window",
                code=ApprovalCode.APPROVED,
            )

        return approve

    return pick


def status_spec(t: Targets, window: Window, policy_steps: tuple[Step, ...]) -> ActSpec:
    work = "; ".join(s.why for s in policy_steps if s.spec is not None) or "routine checks"
    body = (
        f"Scheduled maintenance {window.text()}. The support assistant is unavailable during"
        f" the window (a maintenance page is shown). Planned: {work}."
    )
    params = {
        "name": f"Scheduled maintenance {window.start:%Y-%m-%d %H:%M} UTC",
        "body": body,
        "scheduled_for": window.start.isoformat(),
        "scheduled_until": window.end.isoformat(),
    }
    why = f"48-hour notice of the maintenance window {window.text()}"
    return spec(t.policy, ActionName.SCHEDULE_STATUS_MAINTENANCE, t.status_target, why, params)


async def _ask_ahead(
    run: IncidentRun, t: Targets, window: Window, steps: list[Step]
) -> tuple[list[str], list[str]]:
    """One approval of the exact destructive steps, asked now for the window (scopes, who)."""
    policy = t.policy
    planned = [
        {"step": s.name, "action": s.spec.action.value, "target": s.spec.target, **s.spec.params}
        for s in steps
        if s.spec is not None
    ]
    request = run.request(
        PLAN_ACTION,
        f"maintenance:{window.key}",
        params={"window": window.text(), "steps": planned},
        reason=f"approve these steps now for the maintenance window {window.text()}",
        evidence={s.name: s.why for s in steps},
        two_person=any(
            s.spec is not None and s.spec.action.value in policy.two_person_actions for s in steps
        ),
        approval_timeout_s=policy.maintenance_preapproval_timeout_s,
    )
    answer = await request_approval(request)
    if not answer.approved:
        await run.note("rejected", f"not approved ahead ({answer.reason}): they ask in the window")
        return [], []
    scopes = [step_scope(s.spec) for s in steps if s.spec is not None]
    await run.note("approved", f"approved ahead by {', '.join(answer.approvers)}: {answer.reason}")
    return scopes, answer.approvers


@flow(
    name="maintenance-notice",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def maintenance_notice(
    dry_run: bool = False, now: datetime | None = None, window_start: datetime | None = None
) -> RemediationResult:
    """Runbook "Maintenance Windows": the 48-hour notice — Slack, email and a Statuspage
    scheduled maintenance for the window — and the approval, asked now, of the destructive
    updates planned for it (bound to those exact steps).

    Args:
        dry_run: Plan and say what would be posted; post nothing, ask nothing
        now: The clock (default: now) — a rehearsal or a test
        window_start: The window to announce (default: the one 48 hours from now)
    """
    clock = Clock(now)
    t = await load_targets()
    policy = t.policy
    moment = window_start or clock.now() + timedelta(hours=policy.maintenance_notice_hours)
    end, minutes = policy.maintenance_window_end_utc, policy.maintenance_window_minutes
    window = maintenance.window_of(moment, end, minutes) or maintenance.next_window(
        moment, end, minutes
    )
    run = await IncidentRun.start("maintenance-notice", f"maintenance-{window.key}", dry_run)
    steps = plan_steps(await observe(t), policy, policy.maintenance_steps)
    planned = [{"step": s.name, "why": s.why, "act": bool(s.spec)} for s in steps]
    await run.seen(f"window {window.text()}: " + "; ".join(s.why for s in steps))
    if dry_run:
        return await run.finish(
            "announce", "dry run", verified=None, summary=f"would announce {window.text()}"
        )
    async with await opsdb.connect() as conn:
        notice = await maintenance.save_notice(conn, window, planned, run.flow_run_id)
    status_id = notice.status_incident
    if t.page.page_id and status_id is None:
        posted = await run.act_spec(status_spec(t, window, steps), t.platform, {})
        status_id = posted.outcome.get("status_incident")
        if status_id and posted.status in DONE:
            async with await opsdb.connect() as conn:
                await maintenance.set_status_incident(conn, window.start, str(status_id))
    async with await opsdb.connect() as conn:
        first = await maintenance.mark_notified(conn, window.start)
    if first:
        text = (
            f"Scheduled maintenance {window.text()} (customers notified"
            f"{' on the status page' if status_id else ''}). Planned: "
            + "; ".join(s.why for s in steps)
        )
        await tell(False, text, subject=f"Scheduled maintenance {window.text()}")
    ahead = preapprovable(steps, policy.maintenance_preapprove)
    approved_by: list[str] = []
    if ahead:
        scopes, approved_by = await _ask_ahead(run, t, window, ahead)
        if scopes:
            async with await opsdb.connect() as conn:
                await maintenance.record_approval(conn, window.start, scopes, approved_by)
    who = f"; steps approved ahead by {', '.join(approved_by)}" if approved_by else ""
    summary = f"announced {window.text()}{who}"
    return await run.finish("announce", summary, verified=None, summary=summary)


@flow(
    name="scheduled-maintenance",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def scheduled_maintenance(
    dry_run: bool = False, now: datetime | None = None
) -> RemediationResult:
    """Runbook "Maintenance Windows" → Scheduled Maintenance (Sundays 02:00-04:00 UTC): post
    that it starts, maintenance mode on, the Policy's updates (each only if it still fits before
    the window ends; destructive ones approved at notice time or asked now), verify health,
    maintenance mode off, post completion. Out of time or any failure: service is restored
    first, then a human is paged.

    Args:
        dry_run: Plan and record what would be done; change nothing, tell no customer
        now: The clock (default: now) — a rehearsal or a test
    """
    clock = Clock(now)
    t = await load_targets()
    policy = t.policy
    end, minutes = policy.maintenance_window_end_utc, policy.maintenance_window_minutes
    window = maintenance.window_of(clock.now(), end, minutes)
    if window is None:
        upcoming = maintenance.next_window(clock.now(), end, minutes)
        run = await IncidentRun.start("scheduled-maintenance", None, dry_run)
        why = (
            f"started at {clock.now():%a %H:%M} UTC, outside the maintenance window (next:"
            f" {upcoming.text()}): nothing done"
        )
        await run.escalate(f"Scheduled maintenance did not run: {why}")
        return await run.finish("skip", why, verified=None, summary=why)
    run_id = flow_run_id()
    run = await IncidentRun.start(
        "scheduled-maintenance", f"maintenance-{window.key}-{run_id[:8] or 'direct'}", dry_run
    )
    run.keep_process = True  # a window never exits mid-way to wait for an approval
    async with await opsdb.connect() as conn:
        notice = await maintenance.get_notice(conn, window.start)
        rerun = bool(run_id) and await approvals.has_waited(conn, run_id)
    mr = MaintenanceRun(run, t, clock, window, "scheduled", "scheduled maintenance")
    steps = plan_steps(await observe(t), policy, policy.maintenance_steps)
    await run.seen(f"window {window.text()}, {window.left_s(clock.now()) / 60:.0f} min left")
    if window.left_s(clock.now()) < mr.reserve_s:
        why = f"only {window.left_s(clock.now()) / 60:.0f} min left in the window: nothing done"
        await run.escalate(f"Scheduled maintenance skipped: {why}")
        return await run.finish("skip", why, verified=None, summary=why)
    # 1. post that maintenance starts
    if not rerun:
        noticed = "" if notice else " (no 48-hour notice was posted for this window)"
        await mr.tell(
            f"Scheduled maintenance starts now: {window.text()}{noticed}. Planned: "
            + "; ".join(s.why for s in steps),
            subject=f"Maintenance started {window.text()}",
        )
    await _status_start(mr, window, notice)
    approver = approver_for(notice, policy.maintenance_preapprove)
    return await run_window(mr, steps, approver, "Scheduled maintenance")


async def _status_start(mr: MaintenanceRun, window: Window, notice: Notice | None) -> None:
    """The noticed status page entry goes in progress; without a notice, one is scheduled now."""
    t = mr.t
    if not t.page.page_id:
        await mr.log("status page", "the customer status page is not configured")
        return
    if notice is not None and notice.status_incident:
        mr.status_incident = notice.status_incident
        params = {
            "status_incident": notice.status_incident,
            "status": "in_progress",
            "body": f"Maintenance is in progress ({window.text()}).",
            "component_status": "under_maintenance",
        }
        why = "the maintenance window starts"
        await mr.act(
            spec(t.policy, ActionName.UPDATE_STATUS_INCIDENT, t.status_target, why, params)
        )
        return
    posted = await mr.act(status_spec(t, window.model_copy(update={"start": mr.clock.now()}), ()))
    found = posted.outcome.get("status_incident")
    mr.status_incident = str(found) if found else None


async def run_window(
    mr: MaintenanceRun, steps: tuple[Step, ...], approver: StepApprover, title: str
) -> RemediationResult:
    """Steps 2-5 with restore-first on every failure; the report; a page when it went wrong."""
    run = mr.run
    healthy: bool | None = None
    try:
        if not await mr.enable():
            mr.results.append(StepResult(name="maintenance mode", status="failed", detail="not on"))
        else:
            await mr.updates(steps, approver)
            if not any(r.status in {"failed", "out_of_time"} for r in mr.results):
                healthy = await mr.verify()
    finally:
        restored = await mr.restore()  # first, whatever happened (an exception re-raises after)
        decision, escalate, summary = outcome(mr.results, healthy, restored)
        await _status_end(mr, summary)
        await mr.log("finished", summary)
        await mr.report(f"{title} {mr.window.text()}", summary)
        if escalate:
            await run.escalate(f"{title} {mr.window.text()}: {summary}")
        await mr.tell(f"{title} {mr.window.text()}: {summary}", subject=f"{title}: {decision}")
    return await run.finish(decision, summary, verified=healthy, summary=summary)


async def _status_end(mr: MaintenanceRun, summary: str) -> None:
    if mr.status_incident is None or not mr.t.page.page_id:
        return
    body = "Maintenance is complete; the service is available again."
    if mr.opened is None:
        body = "The maintenance did not take place; nothing was changed."
    elif not mr.restored:
        body = "Maintenance has ended; we are still working on restoring full service."
    params = {"status_incident": mr.status_incident, "body": body}
    action = ActionName.COMPLETE_STATUS_MAINTENANCE
    if mr.kind == "emergency":
        action = ActionName.RESOLVE_STATUS_INCIDENT
    await mr.act(spec(mr.t.policy, action, mr.t.status_target, f"window over: {summary}", params))
