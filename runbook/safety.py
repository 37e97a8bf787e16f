"""Perform one act safely: dry-run, exactly once, budget, approval, re-check, per-target limit.

    perform(request, act=…, reconcile=…, still_needed=…)

1. dry run → ledger `planned`, nothing else (the platform sees zero mutations);
2. already `done` for this incident+action+target → return it, never again;
3. destructive and the hourly budget for the target is spent → `refused`, page a human;
4. needs approval → `approve()` (flows.approval: a deployment run suspends, other runs pause in
   the approval-gate subflow; a timeout = not approved, paged);
   after approval, `still_needed()` re-checks the symptom: gone → `skipped`;
5. a Prefect global concurrency limit per target (destructive) and the ledger's advisory lock;
   under the lock a `started` entry (crash between call and record) is reconciled by reading the
   platform (`reconcile(params first recorded)`) before acting again;
6. `started` → act → `done` (or `failed` on a permanent error).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists
from pydantic import BaseModel

from blocks.policy import Policy
from runbook import ledger, opsdb
from runbook.actions import ActionClass, ActionRequest, action_class, needs_approval
from runbook.errors import PermanentError, TransientError

FINAL = frozenset({"done", "undone"})  # an act that happened: never again for this incident
LEASE_S = 60.0  # the shortest lease Prefect's server accepts
SLOT_WAIT_S = 300.0
Act = Callable[[], Awaitable[dict[str, Any]]]
Probe = Callable[[], Awaitable[bool]]
Reconcile = Callable[[dict[str, Any]], Awaitable[bool]]  # gets the params first recorded
Approver = Callable[[ActionRequest], Awaitable["Approval"]]
Pager = Callable[[str, dict[str, Any]], Awaitable[None]]


class Approval(BaseModel):
    approved: bool
    approvers: list[str] = []
    reason: str = ""
    timed_out: bool = False


class ActOutcome(BaseModel):
    """How one requested act ended; `status` is what the timeline and the summary show."""

    key: str
    action: str
    target: str
    status: str  # planned | done | already_done | refused | rejected | skipped | failed
    detail: str = ""
    outcome: dict[str, Any] = {}
    approvers: list[str] = []
    paged: bool = False  # a human was already paged about this outcome

    @property
    def acted(self) -> bool:
        return self.status == "done"


def _limit_name(target: str) -> str:
    return "runbook-destructive-" + re.sub(r"[^a-zA-Z0-9_.-]+", "-", target)


async def _ensure_limit(name: str) -> None:
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1)
            )


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


async def perform(
    request: ActionRequest,
    *,
    policy: Policy,
    act: Act,
    dry_run: bool,
    approve: Approver,
    page: Pager,
    reconcile: Reconcile | None = None,
    still_needed: Probe | None = None,
) -> ActOutcome:
    """Run `act` for `request` under every rule above; see the module docstring."""
    cls = action_class(policy, request.action)
    key = request.idempotency_key
    base = {"key": key, "action": request.action, "target": request.target}
    async with await opsdb.connect() as conn:
        if dry_run:
            plan = request.model_copy(update={"incident_id": f"dry-run:{request.incident_id}"})
            await ledger.ensure(
                conn, plan, cls, status="planned", dry_run=True, flow_run_id=_flow_run_id()
            )
            await ledger.event(
                conn,
                request.incident_id,
                "planned",
                f"would {request.action} on {request.target} (dry run)",
                key=key,
                detail=request.params,
            )
            return ActOutcome(**base, status="planned", detail="dry run: nothing changed")

        entry = await ledger.ensure(
            conn, request, cls, status="intent", dry_run=False, flow_run_id=_flow_run_id()
        )
        if entry.status in FINAL:
            return ActOutcome(
                **base,
                status="already_done",
                detail="done before for this incident",
                outcome=entry.outcome or {},
                approvers=entry.approvers,
            )

        if cls is ActionClass.DESTRUCTIVE and entry.status in {"intent", "rejected", "refused"}:
            used = await ledger.destructive_done_last_hour(conn, request.target)
            if used >= policy.destructive_budget_per_hour:
                why = (
                    f"budget spent: {used} destructive actions on {request.target} in the last "
                    f"hour (limit {policy.destructive_budget_per_hour})"
                )
                await ledger.mark(conn, key, "refused", outcome={"reason": why})
                await ledger.event(conn, request.incident_id, "refused", why, key=key)
                await page(f"Runbook stopped acting on {request.target}: {why}", {"key": key})
                return ActOutcome(**base, status="refused", detail=why, paged=True)

        approvers = entry.approvers
        if entry.status not in {"approved", "started"} and needs_approval(policy, request.action):
            answer = await approve(request)
            if not answer.approved:
                await ledger.mark(conn, key, "rejected", outcome={"reason": answer.reason})
                await ledger.event(
                    conn,
                    request.incident_id,
                    "rejected",
                    answer.reason,
                    key=key,
                    detail={"timed_out": answer.timed_out},
                )
                paged = answer.timed_out or "did not match" in answer.reason
                if paged:
                    await page(
                        f"Approval for {request.action} on {request.target} not given: "
                        f"{answer.reason}",
                        {"key": key, "incident": request.incident_id},
                    )
                return ActOutcome(**base, status="rejected", detail=answer.reason, paged=paged)
            approvers = answer.approvers
            await ledger.mark(conn, key, "approved", approvers=approvers)
            await ledger.event(
                conn,
                request.incident_id,
                "approved",
                f"approved by {', '.join(approvers)}: {answer.reason}",
                key=key,
            )
            if still_needed is not None and not await still_needed():
                why = "the symptom was gone when re-checked after approval"
                await ledger.mark(conn, key, "skipped", outcome={"reason": why})
                await ledger.event(conn, request.incident_id, "skipped", why, key=key)
                return ActOutcome(**base, status="skipped", detail=why, approvers=approvers)

        limit = _limit_name(request.target)
        if cls is ActionClass.DESTRUCTIVE:
            await _ensure_limit(limit)
        async with await opsdb.connect() as lock_conn:
            await ledger.lock(lock_conn, key)
            try:
                if cls is not ActionClass.DESTRUCTIVE:
                    return await _act_once(conn, request, base, act, reconcile, approvers, page)
                try:
                    # the lease is renewed while we hold it; a crashed holder frees it
                    # after at most LEASE_S (+ the server's repossessor interval)
                    async with concurrency(
                        limit,
                        occupy=1,
                        strict=True,
                        lease_duration=LEASE_S,
                        timeout_seconds=SLOT_WAIT_S,
                    ):
                        budget = policy.destructive_budget_per_hour
                        used = await ledger.destructive_done_last_hour(conn, request.target)
                        if used >= budget:  # another incident used it while we waited
                            why = f"budget spent while waiting: {used} of {budget} this hour"
                            await ledger.mark(conn, key, "refused", outcome={"reason": why})
                            await page(
                                f"Runbook stopped acting on {request.target}: {why}", {"key": key}
                            )
                            return ActOutcome(**base, status="refused", detail=why, paged=True)
                        return await _act_once(conn, request, base, act, reconcile, approvers, page)
                except TimeoutError:  # only the slot wait: act()'s own timeouts are re-raised
                    why = f"another destructive action on {request.target} is still running"
                    await ledger.event(conn, request.incident_id, "refused", why, key=key)
                    await page(f"Runbook could not act on {request.target}: {why}", {"key": key})
                    return ActOutcome(
                        **base, status="refused", detail=why, approvers=approvers, paged=True
                    )
            finally:
                await ledger.unlock(lock_conn, key)


async def _act_once(
    conn: ledger.Conn,
    request: ActionRequest,
    base: dict[str, str],
    act: Act,
    reconcile: Reconcile | None,
    approvers: list[str],
    page: Pager,
) -> ActOutcome:
    key = request.idempotency_key
    entry = await ledger.get(conn, key)
    assert entry is not None
    if entry.status in FINAL:
        return ActOutcome(
            **base,
            status="already_done",
            detail="done by another run",
            outcome=entry.outcome or {},
            approvers=entry.approvers,
        )
    if entry.status == "started" and reconcile is not None and await reconcile(entry.params):
        detail = "a previous attempt had acted (found on the platform); not repeated"
        await ledger.mark(conn, key, "done", outcome={"reconciled": True})
        await ledger.event(conn, request.incident_id, "done", detail, key=key)
        return ActOutcome(**base, status="done", detail=detail, approvers=approvers)

    if entry.status == "started" and reconcile is None:
        detail = (
            "a previous attempt may have acted (crash before its record) and there is no way "
            "to check the platform: not repeated, a human must look"
        )
        await ledger.mark(conn, key, "failed", outcome={"error": detail})
        await ledger.event(conn, request.incident_id, "failed", detail, key=key)
        await page(f"{request.action} on {request.target}: outcome unknown", {"key": key})
        return ActOutcome(**base, status="failed", detail=detail, approvers=approvers, paged=True)

    await ledger.mark(conn, key, "started", count_attempt=True)
    try:
        outcome = await act()
    except TimeoutError:  # we may have acted: the entry stays `started` for reconcile
        raise TransientError(f"{request.action}: timed out, outcome unknown") from None
    except PermanentError as exc:
        await ledger.mark(conn, key, "failed", outcome={"error": str(exc)})
        await ledger.event(conn, request.incident_id, "failed", str(exc), key=key)
        return ActOutcome(**base, status="failed", detail=str(exc), approvers=approvers)
    await ledger.mark(conn, key, "done", outcome=outcome)
    await ledger.event(
        conn,
        request.incident_id,
        "done",
        f"{request.action} on {request.target}",
        key=key,
        detail=outcome,
    )
    return ActOutcome(**base, status="done", outcome=outcome, approvers=approvers)
