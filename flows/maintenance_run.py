"""One maintenance window, run the same way for the Sunday schedule and for an emergency.

    enable()     the window row first (the intake suppresses alerts from then on), then
                 MAINTENANCE_MODE=true — both undone by restore()
    updates()    the planned steps in order, each through the safety core (approval unless given
                 ahead at notice time), each only if it still fits before the window ends
    verify()     the health checks (flows/health.py) against `verify_health`
    restore()    MAINTENANCE_MODE=false and the window row closed — also on any failure, first
    report()     the incident report artifact: timeline, what changed, duration

Every act goes through `IncidentRun.act_spec` (dry run, kill switch, budgets, exactly once).
Rules and verdicts are pure (flows/maintenance_plan.py); this module does the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect.artifacts import acreate_markdown_artifact

from blocks import AppDatabase, AppRedis, CustomerStatusPage, Policy, Railway, Rds, SupportApi
from flows.acts import Platform, done_text
from flows.approval import request_approval
from flows.health import collect_health
from flows.incident import IncidentRun
from flows.maintenance_plan import (
    Clock,
    ReportLine,
    Step,
    StepResult,
    WindowSignals,
    maintenance_mode,
    render_report,
    time_verdict,
    verify_health,
)
from flows.notifications import notify, notify_email
from runbook import maintenance, opsdb, slack_text
from runbook.actions import ActionRequest
from runbook.errors import RunbookError
from runbook.maintenance import Window, WindowRow
from runbook.plan import ActSpec
from runbook.safety import ActOutcome, Approval, Approver
from tasks import migrations, postgres, railway, rds

DONE = frozenset({"done", "already_done"})
StepApprover = Callable[[Step], Approver | None]


@dataclass(frozen=True)
class Targets:
    policy: Policy
    railway: Railway
    rds: Rds
    db: AppDatabase
    api: SupportApi
    cache: AppRedis
    page: CustomerStatusPage

    @property
    def platform(self) -> Platform:
        return Platform(railway=self.railway, rds=self.rds, status_page=self.page, app_db=self.db)

    @property
    def status_target(self) -> str:
        return f"statuspage:{self.page.page_id}"


async def load_targets() -> Targets:
    (policy, rw, aws), (db, api, cache, page) = await asyncio.gather(
        asyncio.gather(Policy.resolve(), Railway.resolve(), Rds.resolve()),
        asyncio.gather(
            AppDatabase.resolve(),
            SupportApi.resolve(),
            AppRedis.resolve(),
            CustomerStatusPage.resolve(),
        ),
    )
    return Targets(policy, rw, aws, db, api, cache, page)


async def _maybe(coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except RunbookError:
        return None


async def _migrations(db: AppDatabase) -> dict[str, Any]:
    """Production's migration state and staging's history (WindowSignals' migration fields)."""
    if not db.migrations_path.strip():
        return {}
    try:
        state = await migrations.get_migration_state(db)
    except RunbookError as exc:
        return {"migration_project": True, "migration_error": str(exc)[:200]}
    staging = None
    if state.to_apply and state.target:
        try:
            staged = await migrations.get_migration_state(
                await AppDatabase.resolve("staging"), state.target
            )
            if staged.database != state.database:  # staging first means another database
                staging = staged.applied
        except RunbookError:
            staging = None
    return {
        "migration_project": True,
        "migration_database": state.database,
        "migration_target": state.target,
        "migration_to_apply": state.to_apply,
        "migration_from": ", ".join(state.db_heads) or migrations.BASE,
        "staging_applied": staging,
    }


async def observe(t: Targets) -> WindowSignals:
    """The live deployment, the RDS instance, the largest tables and the migration state
    (concurrently; what cannot be read plans no step, and says so)."""
    deployments, instance, tables, migration = await asyncio.gather(
        _maybe(railway.get_deployments(t.railway)),
        _maybe(rds.get_db_instance(t.rds)),
        _maybe(postgres.get_largest_tables(t.db, t.policy.vacuum_largest_tables)),
        _migrations(t.db),
    )
    live = None
    if deployments is not None:
        live = next((d for d in deployments.items if d.id == deployments.current_id), None)
    return WindowSignals(
        railway_target=f"railway:{t.railway.service_id}",
        live_deployment=live.id if live else None,
        live_commit=live.commit if live else None,
        rds_target=f"rds:{t.rds.instance_id}" if instance is not None else None,
        rds_status=instance.status if instance else None,
        rds_class=instance.instance_class if instance else None,
        rds_pending=instance.pending_instance_class if instance else None,
        largest_tables=tuple(tables.names) if tables is not None else (),
        **migration,
    )


async def tell(dry_run: bool, text: str, subject: str | None = None) -> None:
    """Slack, and the ops mailbox when `subject` is given (nothing mailed in a dry run)."""
    await notify(("[dry run] " if dry_run else "") + slack_text.escape(text))
    if subject and not dry_run:
        await notify_email(subject, text)


def flow_run_id() -> str:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else ""


class MaintenanceRun:
    """The state of one window while it runs (what the report tells afterwards)."""

    def __init__(
        self, run: IncidentRun, t: Targets, clock: Clock, window: Window, kind: str, reason: str
    ) -> None:
        self.run = run
        self.t = t
        self.clock = clock
        self.window = window
        self.kind = kind
        self.reason = reason
        self.lines: list[ReportLine] = []
        self.changes: list[str] = []
        self.results: list[StepResult] = []
        self.row: WindowRow | None = None
        self.opened: datetime | None = None
        self.closed: datetime | None = None
        self.mode_on = False
        self.restored = True
        self.status_incident: str | None = None

    @property
    def reserve_s(self) -> int:
        return self.t.policy.maintenance_restore_reserve_s

    def left_s(self) -> float:
        return self.window.left_s(self.clock.now())

    async def log(self, step: str, what: str) -> None:
        self.lines.append(ReportLine(at=self.clock.now(), step=step, what=what))
        await self.run.note(step if step in {"escalated", "skipped"} else "seen", f"{step}: {what}")

    async def tell(self, text: str, subject: str | None = None) -> None:
        await tell(self.run.dry_run, text, subject)

    async def act(
        self,
        change: ActSpec,
        *,
        approve: Approver | None = None,
        still_needed: Callable[[], Awaitable[bool]] | None = None,
    ) -> ActOutcome:
        outcome = await self.run.act_spec(
            change,
            self.t.platform,
            {"window": self.window.text(), "kind": self.kind, "reason": self.reason},
            approve=approve,
            still_needed=still_needed,
        )
        said = done_text(change.action, change.params)
        if outcome.status == "done":
            self.changes.append(said)
        await self.log(change.action.value, f"{outcome.status}: {outcome.detail or said}")
        return outcome

    async def enable(self) -> bool:
        """The window row, then maintenance mode; False (nothing left on) when either fails."""
        policy = self.t.policy
        target = f"railway:{self.t.railway.service_id}"
        if not self.run.dry_run:
            async with await opsdb.connect() as conn:
                self.row, other = await maintenance.open_window(
                    conn,
                    seconds=self.left_s(),
                    reason=self.reason,
                    kind=self.kind,
                    flow_run_id=self.run.flow_run_id or self.run.incident_id,
                    incident_id=self.run.incident_id,
                )
            if other is not None:
                await self.log(
                    "skipped",
                    f"another maintenance window is open (#{other.id}, {other.kind}, until"
                    f" {other.ends_at:%H:%M} UTC): nothing done",
                )
                return False
        change = maintenance_mode(policy, target, True, f"{self.kind} maintenance: {self.reason}")
        outcome = await self.act(change)
        if outcome.status not in DONE | {"planned"}:
            await self._close_row()
            return False
        self.mode_on = outcome.status in DONE
        self.opened = self.clock.now()
        return True

    async def updates(self, steps: Sequence[Step], approver: StepApprover) -> None:
        """Each step in order while it fits; a failure or running out of time stops the rest."""
        for index, step in enumerate(steps):
            if step.spec is None:
                self.results.append(StepResult(name=step.name, status="noop", detail=step.why))
                await self.log(step.name, f"nothing to do: {step.why}")
                continue
            fits, why = time_verdict(step.budget_s, self.left_s(), self.reserve_s)
            if not fits:
                await self._out_of_time(steps[index:], why)
                return
            budget = step.budget_s

            async def still_fits(budget: int = budget) -> bool:  # after a slow approval
                return time_verdict(budget, self.left_s(), self.reserve_s)[0]

            approve = approver(step) or self._gate(step.budget_s)
            outcome = await self.act(step.spec, approve=approve, still_needed=still_fits)
            if outcome.status == "skipped":
                await self._out_of_time(steps[index:], "the approval came too late for the window")
                return
            if outcome.status == "rejected":
                self.results.append(
                    StepResult(name=step.name, status="rejected", detail=outcome.detail)
                )
                continue
            if outcome.status == "planned":
                self.results.append(StepResult(name=step.name, status="planned"))
                continue
            if outcome.status not in DONE:
                self.results.append(
                    StepResult(name=step.name, status="failed", detail=outcome.detail)
                )
                return
            ok, detail = await self._settled(step, outcome)
            self.results.append(
                StepResult(name=step.name, status="done" if ok else "failed", detail=detail)
            )
            if not ok:
                await self.log(step.name, f"failed: {detail}")
                return

    def _gate(self, budget_s: int) -> Approver:
        """The approval gate, waiting no longer than the window allows (the step must still
        fit after the answer), and never longer than the Policy's approval timeout."""
        spare = int(self.left_s() - self.reserve_s - budget_s)
        wait = max(60, min(self.t.policy.approval_timeout_s, spare))

        async def approve(request: ActionRequest) -> Approval:
            bounded = request.model_copy(update={"approval_timeout_s": wait})
            return await request_approval(bounded, keep_process=True)

        return approve

    async def _out_of_time(self, rest: Sequence[Step], why: str) -> None:
        for step in rest:
            if step.spec is None:
                continue
            self.results.append(StepResult(name=step.name, status="out_of_time", detail=why))
            await self.log("skipped", f"{step.name}: {why}")

    async def _settled(self, step: Step, outcome: ActOutcome) -> tuple[bool, str]:
        """Wait (bounded by the window) until the step's change is live: the redeployed build
        SUCCESS, the RDS instance `available` in its new class."""
        limit = max(1.0, min(step.budget_s, self.left_s() - self.reserve_s))
        if step.name == "rds_pending" and step.spec is not None:
            waited = await rds.wait_for_db_instance(self.t.rds, limit, poll_s=0.5)
            wanted = step.spec.params["instance_class"]
            ok = not waited.timed_out and waited.instance.instance_class == wanted
            return ok, f"RDS {waited.instance.instance_class} ({' → '.join(waited.seen)})"
        if step.name == "redeploy":
            new = str(outcome.outcome.get("new_deployment_id") or "")
            return await self._deployment_live(new, limit) if new else (True, "redeployed")
        return True, done_text(step.spec.action, step.spec.params) if step.spec else "done"

    async def _deployment_live(self, deployment_id: str, limit: float) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            found = await _maybe(railway.get_deployment(self.t.railway, deployment_id))
            status = found.status if found is not None else "unreadable"
            if status == "SUCCESS":
                return True, f"deployment {deployment_id} is live"
            if status in {"FAILED", "CRASHED", "REMOVED"} or loop.time() + 5 > deadline:
                return False, f"deployment {deployment_id} is {status}"
            await asyncio.sleep(5)

    async def verify(self) -> bool:
        """Runbook step 4: the health checks, while maintenance mode is still on."""
        t = self.t
        report = await collect_health(t.api, t.db, t.cache, t.policy)
        ok, why = verify_health(report)
        await self.log("verify health", why)
        return ok

    async def _close_row(self) -> None:
        if self.row is None:
            return
        async with await opsdb.connect() as conn:
            closed = await maintenance.close_window(conn, self.row.id)
        if closed is not None:
            self.closed = self.clock.now()
        self.row = None

    async def restore(self) -> bool:
        """Runbook step 5: maintenance mode off and the window closed (alerts flow again)."""
        if self.mode_on:
            target = f"railway:{self.t.railway.service_id}"
            change = maintenance_mode(self.t.policy, target, False, "restore service")
            outcome = await self.act(change)
            self.restored = outcome.status in DONE
            self.mode_on = not self.restored
        elif self.opened is not None and self.closed is None:
            self.closed = self.clock.now()  # dry run: nothing was switched on
        await self._close_row()
        return self.restored

    async def report(self, title: str, verdict: str) -> str:
        markdown = render_report(
            title, self.reason, self.lines, self.changes, self.opened, self.closed, verdict
        )
        key = "maintenance-report-" + "".join(
            ch if ch.isalnum() else "-" for ch in self.run.incident_id.lower()
        )
        await acreate_markdown_artifact(
            key=key[:100], markdown=markdown, description=f"Maintenance report: {title}"
        )
        return markdown
