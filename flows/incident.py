"""What every incident flow shares: its incident, its timeline, safe acts, and the summary.

ctx = await IncidentRun.start("high-error-rate", incident_id, dry_run)
await ctx.seen("error rate 12 % (5 min)")              # timeline lines
await ctx.decided(decision.cause, decision.why)
outcome = await ctx.act(request, act=…, reconcile=…, still_needed=…)
return await ctx.finish(verified=True, summary="…")   # artifact + Slack + result
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import psycopg
from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from pydantic import BaseModel

from blocks.policy import Policy
from flows.acts import Platform, executor
from flows.approval import request_approval
from flows.notifications import notify, page, ui_link
from runbook import approvals, incidents, ledger, opsdb, slack_text, timeline
from runbook.actions import ActionRequest
from runbook.errors import PermanentError
from runbook.plan import ActSpec
from runbook.safety import Act, ActOutcome, Approver, Reconcile, perform
from runbook.safety import Probe as StillNeeded
from runbook.settings import get_settings
from runbook.verify import Undo, verify_or_undo

VerifySince = Callable[[float], Awaitable[tuple[bool, str]]]
# decisions that mean "nothing to do": a scheduled run ending in one of them posts nothing
QUIET_DECISIONS = frozenset({"none", "healthy", "ok", "nothing", "no_action", "stay"})


class RemediationResult(BaseModel):
    """What one incident flow did: the row of the demo's summary table."""

    flow: str
    incident_id: str
    title: str
    decision: str
    why: str
    action: str = "none"
    action_status: str = "none"
    approvers: list[str] = []
    verified: bool | None = None
    seconds_to_first_action: float | None = None
    dry_run: bool = False
    summary: str = ""
    ui_url: str = ""


class RunLease:
    """This run's lease (`ledger.run_lease_sql`): a session advisory lock held on a connection of
    its own, in a daemon thread, from the start of the run to its finish. The process dying
    (SIGKILL, OOM, the machine gone) frees it, so the sweeper can tell a run Prefect still shows
    Running from one that lost its process (flows/approval_sweeper.py `recover_lost_runs`).
    A thread, not the event loop: nothing in the flow holds or waits on it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(
            target=self._hold, args=(opsdb.ops_database_url(),), daemon=True
        )

    def _hold(self, url: str) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                sql, args = ledger.run_lease_sql(self.run_id)
                conn.execute(sql, args)
                self._held.set()
                self._release.wait()
        except Exception:  # no lease: the run still runs (a live run is never stopped for it)
            self._held.set()

    async def take(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        await asyncio.to_thread(self._held.wait, timeout_s)

    def release(self) -> None:
        self._release.set()


class IncidentRun:
    """One flow run's view of its incident."""

    def __init__(
        self, flow: str, incident_id: str, title: str, dry_run: bool, policy: Policy
    ) -> None:
        self.flow = flow
        self.incident_id = incident_id
        self.title = title
        self.dry_run = dry_run
        self.policy = policy
        self.started = time.monotonic()
        self.first_action_s: float | None = None
        self.outcomes: list[ActOutcome] = []
        self.resolved_before_start = False
        self.from_incident = False  # opened by the intake (an alert), not a manual/scheduled run
        # wait for approvals in this process (paused), never suspended: for flows that hold a
        # one-time secret in memory across an approval (a rerun from the top would lose it)
        self.keep_process = False
        self.requested_by = get_settings().requested_by
        ctx = FlowRunContext.get()
        self.flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
        # run as another flow's subflow: the parent reports to Slack and closes the timeline
        self.nested = bool(ctx and ctx.flow_run and ctx.flow_run.parent_task_run_id)
        self.lease: RunLease | None = None

    def __del__(self) -> None:  # a run that raised never reached finish(): free its lease
        if getattr(self, "lease", None) is not None:
            self.lease.release()  # type: ignore[union-attr]

    @classmethod
    async def start(cls, flow: str, incident_id: str | None, dry_run: bool) -> IncidentRun:
        """Load the incident the intake opened (or make a manual one for operator runs).

        The Policy, the incident row with this run's approval history, and the run's lease are
        independent reads: they run concurrently (this is on the path from an alert, and from
        an approval answer, to the act)."""
        ctx = FlowRunContext.get()
        run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
        lease = RunLease(run_id) if run_id and not dry_run else None  # alive until finish()

        async def incident_and_history() -> tuple[incidents.Incident | None, bool]:
            async with await opsdb.connect() as conn:
                found = await incidents.get_incident(conn, incident_id) if incident_id else None
                waited = await approvals.has_waited(conn, run_id) if run_id else False
            return found, waited

        async def take_lease() -> None:
            if lease is not None:
                await lease.take()

        try:
            policy, (found, waited), _ = await asyncio.gather(
                Policy.resolve(), incident_and_history(), take_lease()
            )
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        title = f"{flow} (manual run)"
        resolved = False
        if found is not None:
            title = f"{found.title}: {found.summary}" if found.summary else found.title
            resolved = found.status is incidents.IncidentStatus.RESOLVED
        if not incident_id:
            incident_id = f"manual-{uuid.uuid4().hex[:12]}"
        run = cls(flow, incident_id, title, dry_run, policy)
        run.lease = lease
        run.resolved_before_start = resolved
        run.from_incident = not incident_id.startswith("manual-")
        for problem in policy.problems:  # a block document refused: we run on the floor
            await page(
                f"Runbook Policy block refused, running on the environment's floor: {problem}",
                {"key": f"policy-refused:{get_settings().environment}", "flow": flow},
            )
        if waited:
            # a suspended run rerunning after its approval answer: the flow checks again
            await timeline.note(
                incident_id, "resumed", f"{flow} resumed after an approval answer; re-checking"
            )
            return run
        who = f" (asked for by {run.requested_by})" if run.requested_by else ""
        await timeline.note(
            incident_id,
            "seen",
            f"{flow} started for: {title}{who}" + (" (dry run)" if dry_run else ""),
        )
        return run

    async def _withdraw_waiting_approvals(self) -> None:
        """A rerun after an answer that re-checked and no longer needed the action leaves its
        approval unanswered: close it, so `runbook approvals` does not list it."""
        if not self.flow_run_id:
            return
        async with await opsdb.connect() as conn:
            await approvals.withdraw_waiting(conn, self.flow_run_id)

    async def finish_if_resolved(self) -> RemediationResult | None:
        """A resolved alert arrived before this run started: never remediate it."""
        if not self.resolved_before_start:
            return None
        why = "the incident was resolved before the flow started"
        return await self.finish("none", why, verified=None, summary=why + "; nothing done.")

    def _log(self, kind: str, summary: str) -> None:
        """The same story in the run's Logs tab (INFO): seen, decided, waiting, done, verified."""
        with contextlib.suppress(MissingContextError):
            get_run_logger().info("%s: %s", kind, summary)

    async def seen(self, summary: str, **detail: object) -> None:
        self._log("seen", summary)
        await timeline.note(self.incident_id, "seen", summary, **detail)

    async def decided(self, decision: str, why: str) -> None:
        self._log("decided", f"{decision}: {why}")
        await timeline.note(self.incident_id, "decided", f"{decision}: {why}")

    async def note(self, kind: str, summary: str) -> None:
        self._log(kind, summary)
        await timeline.note(self.incident_id, kind, summary)

    def request(self, action: str, target: str, **fields: Any) -> ActionRequest:
        fields.setdefault("requested_by", self.requested_by)
        return ActionRequest(incident_id=self.incident_id, action=action, target=target, **fields)

    async def act(
        self,
        request: ActionRequest,
        *,
        act: Act,
        reconcile: Reconcile | None = None,
        still_needed: StillNeeded | None = None,
        approve: Approver | None = None,
    ) -> ActOutcome:
        """Perform through the safety core (approval, ledger, budget, dry-run). `approve`
        replaces the approval gate (e.g. an approval given ahead, at maintenance notice time)."""
        outcome = await perform(
            request,
            policy=self.policy,
            act=act,
            dry_run=self.dry_run,
            approve=approve
            or partial(request_approval, keep_process=self.keep_process, policy=self.policy),
            page=page,
            reconcile=reconcile,
            still_needed=still_needed,
        )
        if outcome.status in {"done", "planned"} and self.first_action_s is None:
            self.first_action_s = round(time.monotonic() - self.started, 1)
        self.outcomes.append(outcome)
        return outcome

    def request_for(self, spec: ActSpec, evidence: dict[str, Any]) -> ActionRequest:
        """The ledger's request for a decided act."""
        undo = ", ".join(f"{k}={v}" for k, v in (spec.undo_params or {}).items())
        return self.request(
            spec.action.value,
            spec.target,
            params=spec.params,
            reason=spec.why,
            evidence=evidence,
            reversible=spec.reversible,
            undo_hint=undo,
            two_person=spec.two_person,
            break_glass=spec.break_glass,
        )

    def _calls(
        self, spec: ActSpec, platform: Platform
    ) -> tuple[Act, Reconcile | None, Undo | None]:
        ex = executor(spec.action)
        check, back, undo_params = ex.reconcile, ex.undo, spec.undo_params

        async def act() -> dict[str, Any]:
            return await ex.act(platform, spec.params)

        async def reconcile(recorded: dict[str, Any]) -> bool:
            return bool(check and await check(platform, recorded))

        async def undo() -> dict[str, Any]:
            if back is None or undo_params is None:
                raise PermanentError(f"{spec.action} cannot be undone")
            return await back(platform, undo_params)

        return (
            act,
            reconcile if check is not None else None,
            undo if back is not None and undo_params is not None else None,
        )

    async def act_spec(
        self,
        spec: ActSpec,
        platform: Platform,
        evidence: dict[str, Any],
        *,
        still_needed: StillNeeded | None = None,
        approve: Approver | None = None,
    ) -> ActOutcome:
        """Perform a decided act (no verify): the executor table, through the safety core."""
        act, reconcile, _ = self._calls(spec, platform)
        return await self.act(
            self.request_for(spec, evidence),
            approve=approve,
            act=act,
            reconcile=reconcile,
            still_needed=still_needed,
        )

    async def execute(
        self,
        decision: str,
        spec: ActSpec,
        platform: Platform,
        *,
        evidence: dict[str, Any],
        describe: str,
        verify: VerifySince | None = None,
        still_needed: StillNeeded | None = None,
        window_s: float = 90.0,
        settle_s: float = 10.0,
        when_verified: Callable[[], Awaitable[None]] | None = None,
    ) -> RemediationResult:
        """Perform a decided act, verify it, undo it if it did not help, finish."""
        act, reconcile, undo = self._calls(spec, platform)
        return await self.remediate(
            decision,
            spec.why,
            self.request_for(spec, evidence),
            act=act,
            describe=describe,
            reconcile=reconcile,
            still_needed=still_needed,
            verify=verify,
            undo=undo,
            window_s=window_s,
            settle_s=settle_s,
            when_verified=when_verified,
        )

    async def remediate(
        self,
        decision: str,
        why: str,
        request: ActionRequest,
        *,
        act: Act,
        describe: str,
        reconcile: Reconcile | None = None,
        still_needed: StillNeeded | None = None,
        verify: VerifySince | None = None,
        undo: Undo | None = None,
        window_s: float = 90.0,
        settle_s: float = 10.0,
        when_verified: Callable[[], Awaitable[None]] | None = None,
    ) -> RemediationResult:
        """Act safely, then verify on what happens *after* the act (undo + escalate if it does
        not help), then finish. `verify(acted_at)` gets the event-loop time of the act."""
        outcome = await self.act(request, act=act, reconcile=reconcile, still_needed=still_needed)
        if outcome.status != "done":
            if outcome.status in {"rejected", "held", "refused", "failed"} and not outcome.paged:
                await self.escalate(
                    f"{request.action} on {request.target} {outcome.status}: {outcome.detail}"
                )
            # say what happened, not what was planned ("rolled back to …" only when it was)
            return await self.finish(
                decision,
                why,
                verified=None,
                summary=f"NOT done — {request.action} on {request.target} "
                f"{outcome.status}: {outcome.detail or 'no change'}",
            )
        if verify is None:
            return await self.finish(decision, why, verified=None, summary=f"{describe}: done")
        acted_at = asyncio.get_running_loop().time()
        await asyncio.sleep(min(settle_s, window_s))
        checked = await verify_or_undo(
            request,
            verify=lambda: verify(acted_at),
            undo=undo,
            page=page,
            window_s=window_s,
            interval_s=5.0,
        )
        if checked.verified and when_verified is not None:
            await when_verified()  # e.g. §5 resolves the status page before the summary
        return await self.finish(
            decision, why, verified=checked.verified, summary=f"{describe}; {checked.detail}"
        )

    async def escalate(self, summary: str) -> bool:
        """Page the on-call engineer (Slack if PagerDuty fails); True when PagerDuty took it."""
        paged = await page(summary, {"incident": self.incident_id, "flow": self.flow})
        await timeline.note(
            self.incident_id, "escalated", summary + ("" if paged else " (page NOT accepted)")
        )
        return paged

    async def finish(
        self, decision: str, why: str, *, verified: bool | None, summary: str
    ) -> RemediationResult:
        """Publish the timeline artifact, tell Slack (with the link), return the result."""
        last = self.outcomes[-1] if self.outcomes else None
        link = ui_link(self.flow_run_id) if self.flow_run_id else ""
        state = {True: "verified", False: "NOT verified", None: "nothing to verify"}[verified]
        kind = f"{self.flow} finished" if self.nested else "finished"
        await self._withdraw_waiting_approvals()
        await timeline.note(self.incident_id, kind, f"{decision} ({state}): {summary}")
        await timeline.publish(self.incident_id, f"{self.flow}: {self.title}")
        prefix = "[dry run] " if self.dry_run else ""
        # a scheduled or manual run that found nothing to do says nothing (no Slack noise);
        # an alert's incident, any act and any escalation always report
        quiet = not self.from_incident and not self.outcomes and decision in QUIET_DECISIONS
        if not self.nested and not quiet:
            await notify(
                f"{prefix}*{self.flow}* — incident {self.incident_id}: {decision}. "
                f"{slack_text.escape(summary)} "
                f"Timeline: {link}"
            )
        if self.lease is not None:  # finished: the sweeper has nothing to recover here
            self.lease.release()
        return RemediationResult(
            flow=self.flow,
            incident_id=self.incident_id,
            title=self.title,
            decision=decision,
            why=why,
            action=last.action if last else "none",
            action_status=last.status if last else "none",
            approvers=last.approvers if last else [],
            verified=verified,
            seconds_to_first_action=self.first_action_s,
            dry_run=self.dry_run,
            summary=summary,
            ui_url=link,
        )
