"""Perform one act safely: dry-run, exactly once, kill switch, budgets, approval, re-check, locks.

    perform(request, act=…, reconcile=…, still_needed=…)

1. dry run → ledger `planned`, nothing else (the platform sees zero mutations);
2. already `done` for this incident+action+target → return it, never again;
3. the kill switch (`runbook pause`) covers the target → `held`, page;
4. a mutating act over the target's hourly budget (every mutation; destructive ones also have
   their own, smaller budget) → `refused`, page a human;
5. needs approval → `approve()` (flows.approval: a deployment run suspends, other runs pause in
   the approval-gate subflow; a timeout = not approved, paged). An approval recorded earlier is
   reused only for the identical scope (action, target, parameters) and while fresh (Policy
   `approval_valid_s`). After approval `still_needed()` re-checks the symptom: gone → `skipped`;
6. a Prefect global concurrency limit per target (destructive) and the ledger's advisory lock;
   under them the kill switch and budget are read again right before the act, and a `started`
   entry (crash between call and record) is reconciled by reading the platform first (with the
   parameters it was started with); not there and this run's parameters differ → refuse, page;
7. `started` → act → `done` (or `failed` on a permanent error). A mutation whose answer was lost
   (`OutcomeUnknown`, a timeout) is never re-sent blind: the platform is read at once (reconcile)
   → `done` if it happened, else it stays `started`, fails this run and pages.
No connection to the ops database is held while a human decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from pydantic import BaseModel

from runbook import killswitch, ledger, opsdb
from runbook.actions import ActionClass, ActionRequest, action_class, needs_approval
from runbook.approval import scope
from runbook.errors import OutcomeUnknown, PermanentError
from runbook.policy import PolicyRules

logger = logging.getLogger("runbook.safety")
FINAL = frozenset({"done", "undone"})  # an act that happened: never again for this incident
LEASE_S = 60.0  # the shortest lease Prefect's server accepts
SLOT_WAIT_S = 300.0
Act = Callable[[], Awaitable[dict[str, Any]]]
Probe = Callable[[], Awaitable[bool]]
Reconcile = Callable[[dict[str, Any]], Awaitable[bool]]  # gets the params first recorded
Approver = Callable[[ActionRequest], Awaitable["Approval"]]
Pager = Callable[[str, dict[str, Any]], Awaitable[bool | None]]


class ApprovalCode(StrEnum):
    """Why an approval ended as it did: paging is decided on this, never on a reason's words."""

    APPROVED = "approved"
    REJECTED = "rejected"  # a human said no
    REFUSED = "refused"  # an answer tried to approve and failed the checks (possible forgery)
    TIMED_OUT = "timed_out"  # nobody answered in time
    IMPOSSIBLE = "impossible"  # the configuration cannot give a valid approval


class Approval(BaseModel):
    approved: bool
    approvers: list[str] = []
    reason: str = ""
    code: ApprovalCode = ApprovalCode.REJECTED
    paged: bool = False  # the gate already paged a human about this answer

    @property
    def timed_out(self) -> bool:
        return self.code is ApprovalCode.TIMED_OUT


class ActOutcome(BaseModel):
    """How one requested act ended; `status` is what the timeline and the summary show."""

    key: str
    action: str
    target: str
    # planned | done | already_done | refused | rejected | skipped | failed | held
    status: str
    detail: str = ""
    outcome: dict[str, Any] = {}
    approvers: list[str] = []
    paged: bool = False  # PagerDuty accepted a page about this outcome

    @property
    def acted(self) -> bool:
        return self.status == "done"


# TEST-ONLY fault injection (issue #15, tests/faults/): inert unless the environment variable
# RUNBOOK_TEST_PAUSE_AT names a step. At that step the act's process stops (sleeps) so a fault
# test can SIGKILL it exactly there: "approved" — the approval is recorded in the ledger, nothing
# sent yet; "acted" — the platform answered, the ledger does not know yet (still `started`).
# Never set it outside the fault suite: a paused process never acts.
TEST_PAUSE_ENV = "RUNBOOK_TEST_PAUSE_AT"


async def _test_pause(step: str) -> None:
    if step in os.environ.get(TEST_PAUSE_ENV, "").split(","):
        await asyncio.sleep(3600)


def _limit_name(target: str) -> str:
    return "runbook-destructive-" + re.sub(r"[^a-zA-Z0-9_.-]+", "-", target)


async def _ensure_limit(name: str) -> None:
    """The target's global concurrency limit (1 slot) exists. Read first: a create that fails
    because the limit exists is a failed write on the Prefect server (on its embedded SQLite
    it takes the write lock, and other writers then see "database is locked")."""
    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            await client.read_global_concurrency_limit_by_name(name)
            return
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1)
            )


@contextlib.asynccontextmanager
async def target_slot(name: str, wait_s: float = SLOT_WAIT_S) -> AsyncIterator[None]:
    """The one slot of the target's global concurrency limit `name`, held under a lease that is
    renewed while we hold it and released at the end (a crashed holder's lease runs out after
    LEASE_S, and the server's repossessor frees the slot). TimeoutError when another holder
    keeps it longer than `wait_s`; PermanentError when the limit does not exist.

    What Prefect's `concurrency()` does, on the run's own API client: Prefect's goes through a
    queue service on another thread with an API client of its own and starts a renewal thread,
    ~0.15 s on the way to every destructive act (docs/benchmarks.md)."""
    async with get_client() as client:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                response = await client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S
                )
                break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != httpx.codes.LOCKED:
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    why = f"the slot of {name} was not free within {wait_s:g} s"
                    raise TimeoutError(why) from None
                retry_after = float(exc.response.headers.get("Retry-After") or 1.0)
                await asyncio.sleep(min(max(retry_after, 0.1), left))
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if not granted.limits:
            raise PermanentError(f"the global concurrency limit {name} does not exist")

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_S / 3)
                try:
                    await client.renew_concurrency_lease(granted.lease_id, LEASE_S)
                except Exception as exc:  # the act goes on: stopping it midway is worse
                    logger.warning("renewing the lease on %s failed: %s", name, exc)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(BaseException):
                await renewing
            try:
                await client.release_concurrency_slots_with_lease(granted.lease_id)
            except Exception as exc:  # the lease runs out on its own
                logger.warning("releasing the slot of %s failed: %s", name, exc)


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


@contextlib.asynccontextmanager
async def _db() -> AsyncIterator[ledger.Conn]:
    async with await opsdb.connect() as conn:
        yield conn


async def _paged(page: Pager, summary: str, details: dict[str, Any]) -> bool:
    return (await page(summary, details)) is not False


class _Perform:
    """One `perform()` call: the request, its rules and how it reports."""

    def __init__(
        self,
        request: ActionRequest,
        policy: PolicyRules,
        page: Pager,
        reconcile: Reconcile | None,
    ) -> None:
        self.request = request
        self.policy = policy
        self.page = page
        self.reconcile = reconcile
        self.key = request.idempotency_key
        self.cls = action_class(policy, request.action)
        self.base = {"key": self.key, "action": request.action, "target": request.target}

    def outcome(self, status: str, detail: str = "", **extra: Any) -> ActOutcome:
        return ActOutcome(**self.base, status=status, detail=detail, **extra)

    async def stop(
        self, conn: ledger.Conn, status: str, why: str, approvers: list[str] | None = None
    ) -> ActOutcome:
        """Record a "did not act" verdict, page it, and return it."""
        await ledger.mark(conn, self.key, status, outcome={"reason": why})
        await ledger.event(conn, self.request.incident_id, status, why, key=self.key)
        paged = await _paged(
            self.page,
            f"Runbook did not {self.request.action} on {self.request.target}: {why}",
            {"key": self.key, "incident": self.request.incident_id},
        )
        return self.outcome(status, why, approvers=approvers or [], paged=paged)

    async def held(
        self, conn: ledger.Conn, approvers: list[str] | None = None
    ) -> ActOutcome | None:
        pause = await killswitch.active(conn, self.request.target)
        if pause is None:
            return None
        covers = "all targets" if pause.target == killswitch.ALL else pause.target
        why = (
            f"held by the kill switch ({covers}, paused by {pause.paused_by}: {pause.reason});"
            " `runbook resume` lifts it"
        )
        return await self.stop(conn, "held", why, approvers)

    async def over_budget(
        self, conn: ledger.Conn, approvers: list[str] | None = None
    ) -> ActOutcome | None:
        if self.cls is ActionClass.READ:
            return None
        target = self.request.target
        used = await ledger.mutations_done_last_hour(conn, target)
        limit = self.policy.mutation_budget_per_hour
        kind = "mutating"
        if self.cls is ActionClass.DESTRUCTIVE:
            destructive = await ledger.destructive_done_last_hour(conn, target)
            if destructive >= self.policy.destructive_budget_per_hour:
                used, limit, kind = (
                    destructive,
                    self.policy.destructive_budget_per_hour,
                    "destructive",
                )
        if used < limit:
            return None
        why = f"budget spent: {used} {kind} actions on {target} in the last hour (limit {limit})"
        return await self.stop(conn, "refused", why, approvers)

    def approval_reusable(self, entry: ledger.LedgerEntry) -> bool:
        if entry.status != "approved" or entry.approved_at is None:
            return False
        age = (datetime.now(UTC) - entry.approved_at).total_seconds()
        return entry.approved_scope == scope(self.request) and age <= self.policy.approval_valid_s


async def perform(
    request: ActionRequest,
    *,
    policy: PolicyRules,
    act: Act,
    dry_run: bool,
    approve: Approver,
    page: Pager,
    reconcile: Reconcile | None = None,
    still_needed: Probe | None = None,
) -> ActOutcome:
    """Run `act` for `request` under every rule above; see the module docstring."""
    run = _Perform(request, policy, page, reconcile)
    cls, key, base = run.cls, run.key, run.base
    async with _db() as conn:
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
        if (held := await run.held(conn)) is not None:
            return held
        if entry.status != "started" and (spent := await run.over_budget(conn)) is not None:
            return spent
        approvers = entry.approvers
        asking = (
            entry.status != "started"
            and needs_approval(policy, request.action)
            and not run.approval_reusable(entry)
        )
        if asking and entry.status == "approved":
            await ledger.event(
                conn,
                request.incident_id,
                "approval",
                "the earlier approval was for other parameters or has expired: asking again",
                key=key,
            )

    limit_ready = False
    if asking:  # no database connection is held while a human decides
        answer = await approve(request)
        async with _db() as conn:
            if not answer.approved:
                await ledger.mark(conn, key, "rejected", outcome={"reason": answer.reason})
                await ledger.event(
                    conn,
                    request.incident_id,
                    "rejected",
                    answer.reason,
                    key=key,
                    detail={"code": answer.code.value},
                )
                paged = answer.paged
                # nobody answered, or nobody could: a human must hear of it now (a plain "no"
                # is escalated by the flow; a refused answer was paged by the gate)
                if answer.code in {ApprovalCode.TIMED_OUT, ApprovalCode.IMPOSSIBLE} and not paged:
                    paged = await _paged(
                        page,
                        f"Approval for {request.action} on {request.target} not given: "
                        f"{answer.reason}",
                        {"key": key, "incident": request.incident_id},
                    )
                return ActOutcome(**base, status="rejected", detail=answer.reason, paged=paged)
            approvers = answer.approvers
            await ledger.mark(
                conn, key, "approved", approvers=approvers, approved_scope=scope(request)
            )
            await ledger.event(
                conn,
                request.incident_id,
                "approved",
                f"approved by {', '.join(approvers)}: {answer.reason}",
                key=key,
            )
        await _test_pause("approved")
        if still_needed is not None:
            # the re-check and the (idempotent) creation of the target's concurrency limit are
            # independent round trips: one wait instead of two on the way to the act
            needed, made = await asyncio.gather(
                still_needed(),
                _ensure_limit(_limit_name(request.target))
                if cls is ActionClass.DESTRUCTIVE
                else asyncio.sleep(0),
                return_exceptions=True,
            )
            if isinstance(needed, BaseException):
                raise needed
            if not needed:
                why = "the symptom was gone when re-checked after approval"
                async with _db() as conn:
                    await ledger.mark(conn, key, "skipped", outcome={"reason": why})
                    await ledger.event(conn, request.incident_id, "skipped", why, key=key)
                return ActOutcome(**base, status="skipped", detail=why, approvers=approvers)
            limit_ready = not isinstance(made, BaseException)  # else: tried again, below

    limit = _limit_name(request.target)
    if cls is ActionClass.DESTRUCTIVE and not limit_ready:
        await _ensure_limit(limit)
    async with _db() as conn, _db() as lock_conn:
        await ledger.lock(lock_conn, key)
        try:
            if cls is not ActionClass.DESTRUCTIVE:
                return await _act_once(run, conn, act, approvers)
            try:
                # the lease is renewed while we hold it; a crashed holder frees it
                # after at most LEASE_S (+ the server's repossessor interval)
                async with target_slot(limit):
                    return await _act_once(run, conn, act, approvers)
            except TimeoutError:  # only the slot wait: act()'s own timeouts are handled inside
                why = f"another destructive action on {request.target} is still running"
                return await run.stop(conn, "refused", why, approvers)
        finally:
            await ledger.unlock(lock_conn, key)


async def _act_once(run: _Perform, conn: ledger.Conn, act: Act, approvers: list[str]) -> ActOutcome:
    request, key = run.request, run.key
    entry = await ledger.get(conn, key)
    if entry is None:
        raise PermanentError(f"ledger entry {key} vanished before the act")
    if entry.status in FINAL:
        return run.outcome(
            "already_done",
            "done by another run",
            outcome=entry.outcome or {},
            approvers=entry.approvers,
        )
    if entry.status == "started":
        if run.reconcile is not None and await run.reconcile(entry.params):
            detail = "a previous attempt had acted (found on the platform); not repeated"
            await ledger.mark(conn, key, "done", outcome={"reconciled": True})
            await ledger.event(conn, request.incident_id, "done", detail, key=key)
            return run.outcome("done", detail, approvers=approvers)
        if run.reconcile is None:
            return await _unknown(run, conn, approvers, "there is no way to check the platform")
        if entry.params != request.params:  # not there, and this run would act differently
            why = (
                f"an earlier attempt started {request.action} with other parameters "
                f"({entry.params}) and it is not on the platform: not acting under a scope "
                "nobody approved, a human must look"
            )
            await ledger.event(conn, request.incident_id, "refused", why, key=key)
            paged = await _paged(
                run.page, f"{request.action} on {request.target}: {why}", {"key": key}
            )
            return run.outcome("refused", why, approvers=approvers, paged=paged)
    # right before the act: the kill switch and the budget, read again under the lock
    if (held := await run.held(conn, approvers)) is not None:
        return held
    if entry.status != "started" and (spent := await run.over_budget(conn, approvers)):
        return spent

    await ledger.mark(conn, key, "started", count_attempt=True)
    try:
        outcome = await act()
    except (OutcomeUnknown, TimeoutError) as exc:  # sent, answer lost: read, never re-send
        if run.reconcile is not None and await run.reconcile(request.params):
            detail = "the answer was lost but the platform shows the act happened: not repeated"
            await ledger.mark(conn, key, "done", outcome={"reconciled": True})
            await ledger.event(conn, request.incident_id, "done", detail, key=key)
            return run.outcome("done", detail, approvers=approvers)
        why = str(exc) or type(exc).__name__
        return await _unknown(run, conn, approvers, f"{why}; the platform does not show it")
    except PermanentError as exc:
        await ledger.mark(conn, key, "failed", outcome={"error": str(exc)})
        await ledger.event(conn, request.incident_id, "failed", str(exc), key=key)
        return run.outcome("failed", str(exc), approvers=approvers)
    await _test_pause("acted")
    await ledger.mark(conn, key, "done", outcome=outcome)
    await ledger.event(
        conn,
        request.incident_id,
        "done",
        f"{request.action} on {request.target}",
        key=key,
        detail=outcome,
    )
    return run.outcome("done", outcome=outcome, approvers=approvers)


async def _unknown(run: _Perform, conn: ledger.Conn, approvers: list[str], why: str) -> ActOutcome:
    """The act may have happened and we cannot tell: leave it `started`, never repeat, page."""
    request = run.request
    detail = f"outcome unknown ({why}): not repeated, a human must look"
    await ledger.event(conn, request.incident_id, "failed", detail, key=run.key)
    paged = await _paged(
        run.page,
        f"{request.action} on {request.target}: outcome unknown",
        {"key": run.key, "incident": request.incident_id},
    )
    return run.outcome("failed", detail, approvers=approvers, paged=paged)
