"""The approval gate: how a flow waits for an operator's answer in the Prefect UI.

Two ways to wait, one form, one set of rules (allowlist, one-time code, distinct approvers):

* **suspend** — a top-level run started from a deployment (an alert, a schedule, an operator's
  `run_deployment`) suspends itself: the run's process exits and the worker / `runbook serve`
  slot is free while a human decides. Resuming it (UI form or `runbook approve`) reruns the flow
  from the top: it re-checks the symptom, decides again, reaches the same approval point and gets
  the stored answer instead of suspending again. Nobody answering is handled by the approval
  sweeper (`runbook serve`, `runbook sweep`): at the expiry it resumes the run with a "timed out"
  answer, so the run ends "not approved" and pages, instead of Prefect failing it silently.
* **pause** — everything else (a flow called directly, a subflow: Prefect cannot suspend those)
  runs the approval-gate subflow, which pauses and keeps its process. A subflow, because a pause
  timeout always ends its run Failed: the parent reads that failure as "not approved" and carries
  on in a clear state.

Both run the same loop (`_wait_for_approvals`); only the Prefect primitive differs (`_Pause`,
`_Suspend`): one wait per approver needed (two-person actions wait twice and require a
different name), each approval point under its own pause key, announced (codes to each
approver's own channel, the request to Slack) before it is recorded, answers checked by one
`judge()`. Every "not approved" carries a structured `ApprovalCode`: who pages is decided on it,
never on the wording of a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import apause_flow_run, asuspend_flow_run

from blocks.policy import Policy
from flows.approval_notify import announce, gate_problem
from flows.notifications import page, ui_link
from runbook import approvals, opsdb
from runbook.actions import ActionRequest, action_class, approvals_needed
from runbook.approval import (
    ApprovalInput,
    CodedApprovalInput,
    approval_secret,
    check_answer,
    code_matches,
    describe_request,
    scope,
)
from runbook.approvals import ApprovalStatus, WaitMode
from runbook.safety import Approval, ApprovalCode
from runbook.settings import get_settings

# the answer the approval sweeper resumes an expired suspended run with
TIMEOUT_APPROVER = "runbook: no answer in time"
# Prefect's own pause timeout for a suspended run: ours plus this grace, so the sweeper (every few
# seconds) always answers first; Prefect failing the run is the last resort when nothing sweeps
SUSPEND_GRACE_S = 300


class _Wait(Protocol):
    """How the current run waits for one answer: the only part the two gates do differently."""

    mode: WaitMode

    async def answer(
        self, form: type[ApprovalInput], description: str, key: str, timeout_s: int
    ) -> tuple[ApprovalInput, datetime]: ...


class _Pause:
    """The approval-gate subflow keeps its process and polls (a timeout fails the subflow)."""

    mode = WaitMode.PAUSE

    async def answer(
        self, form: type[ApprovalInput], description: str, key: str, timeout_s: int
    ) -> tuple[ApprovalInput, datetime]:
        answer = await apause_flow_run(
            wait_for_input=form.with_initial_data(description=description),
            timeout=timeout_s,
            poll_interval=get_settings().approval_poll_s,
            key=key,
        )
        return answer, datetime.now(UTC)


class _Suspend:
    """A deployment run exits while it waits and reruns after the answer; the stored answer is
    then returned here, checked as of the moment of the resume."""

    mode = WaitMode.SUSPEND

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    async def answer(
        self, form: type[ApprovalInput], description: str, key: str, timeout_s: int
    ) -> tuple[ApprovalInput, datetime]:
        # exits this process on the first pass; returns the stored answer after the resume.
        # When the answer came is read meanwhile (on the first pass there is none: dropped)
        resumed_at = asyncio.create_task(_resumed_at(self.run_id, key))
        try:
            answer = await asuspend_flow_run(
                wait_for_input=form.with_initial_data(description=description),
                timeout=timeout_s + SUSPEND_GRACE_S,
                key=key,
            )
        except BaseException:
            resumed_at.cancel()
            raise
        return answer, await resumed_at


def _current_run_id() -> str:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("an approval can only be waited for inside a flow run")
    return str(ctx.flow_run.id)


async def _refuse(request: ActionRequest, why: str, run_id: str, key: str) -> Approval:
    """The configuration cannot give a valid approval: not approved, paged."""
    async with await opsdb.connect() as conn:
        await approvals.decide(conn, run_id, key, ApprovalStatus.REJECTED, None, why)
    get_run_logger().error("Not approved: %s", why)
    paged = await page(
        f"Approval for {request.action} on {request.target} impossible: {why}",
        {"incident": request.incident_id, "key": request.idempotency_key},
    )
    return Approval(approved=False, reason=why, code=ApprovalCode.IMPOSSIBLE, paged=paged)


async def _refused_answer(
    request: ActionRequest, answer: ApprovalInput, problem: str, approved_by: list[str]
) -> Approval:
    """An answer that tried to approve and was refused (wrong code, not on the list, the
    requester, a repeated name) is a possible forgery: page it. A plain rejection is not."""
    if not answer.approve:
        return Approval(
            approved=False, approvers=approved_by, reason=problem, code=ApprovalCode.REJECTED
        )
    paged = await page(
        f"Refused an approval of {request.action} on {request.target}: {problem}",
        {"incident": request.incident_id, "key": request.idempotency_key},
    )
    return Approval(
        approved=False,
        approvers=approved_by,
        reason=problem,
        code=ApprovalCode.REFUSED,
        paged=paged,
    )


async def _wait_for_approvals(
    request: ActionRequest, wait: _Wait, key_prefix: str, policy: Policy | None = None
) -> Approval:
    """The one approval loop (see the module docstring). `policy`: the run's own, when the
    caller resolved it already (else it is resolved here)."""
    logger = get_run_logger()
    run_id = _current_run_id()
    policy = policy or await Policy.resolve()
    needed = approvals_needed(policy, request)
    form: type[ApprovalInput] = CodedApprovalInput if policy.require_code else ApprovalInput
    link = ui_link(run_id)
    approved_by: list[str] = []
    reasons: list[str] = []
    if (why := gate_problem(policy, request)) is not None:
        return await _refuse(request, why, run_id, f"{key_prefix}-1")
    for number in range(1, needed + 1):
        key = f"{key_prefix}-{number}"
        async with await opsdb.connect() as conn:
            stored = await approvals.load(conn, run_id, key)
        if stored is not None and stored.status is ApprovalStatus.APPROVED:
            approved_by.append(stored.approver or "")
            reasons.append(f"{stored.approver}: {stored.reason or 'no reason given'}")
            continue
        if stored is not None and stored.status in {
            ApprovalStatus.REJECTED,
            ApprovalStatus.TIMED_OUT,
        }:
            timed_out = stored.status is ApprovalStatus.TIMED_OUT
            return Approval(
                approved=False,
                approvers=approved_by,
                reason=stored.reason or stored.status.value,
                code=ApprovalCode.TIMED_OUT if timed_out else ApprovalCode.REJECTED,
            )
        # break-glass (off unless the environment sets it): a second approver who does not answer
        # within break_glass_after_s lets the first one's approval stand
        glass = bool(
            request.break_glass and policy.break_glass_after_s and approved_by and number >= 2
        )
        timeout_s = request.approval_timeout_s or policy.approval_timeout_s
        if glass and policy.break_glass_after_s:
            timeout_s = min(timeout_s, policy.break_glass_after_s)
        if stored is None or stored.status is not ApprovalStatus.WAITING:
            expires_at = (datetime.now(UTC) + timedelta(seconds=timeout_s)).replace(microsecond=0)
            # announce first: a process that dies between the two announces again on its rerun
            await announce(policy, request, run_id, link, expires_at, number, needed)
            async with await opsdb.connect() as conn:
                await approvals.record(
                    conn,
                    run_id=run_id,
                    pause_key=key,
                    mode=wait.mode,
                    request=request,
                    summary=f"{request.action} on {request.target}: {request.reason}",
                    link=link,
                    expires_at=expires_at,
                )
            logger.info(
                "Waiting for approval %d/%d of %s on %s by %s (a one-time code went to each;"
                " answer with Resume on this run or `runbook approve %s`) until %s UTC (%s)",
                number,
                needed,
                request.action,
                request.target,
                "one of " + ", ".join(a for a in policy.approvers if a not in approved_by)
                if policy.approvers
                else "an approver",
                run_id,
                f"{expires_at:%H:%M:%S}",
                "this process is freed" if wait.mode is WaitMode.SUSPEND else "paused",
            )
        else:
            expires_at = stored.expires_at
        description = describe_request(
            request,
            action_class=action_class(policy, request.action).value,
            expires_at=expires_at,
            approver_number=number,
            approvers_needed=needed,
            require_code=policy.require_code,
        )
        answer, answered_at = await wait.answer(form, description, key, timeout_s)
        late = answered_at > expires_at
        if (late or (not answer.approve and answer.approver == TIMEOUT_APPROVER)) and glass:
            return await _break_glass(request, run_id, key, approved_by, reasons, timeout_s)
        if late or (not answer.approve and answer.approver == TIMEOUT_APPROVER):
            why = f"no approval within {timeout_s} s"
            async with await opsdb.connect() as conn:
                await approvals.decide(conn, run_id, key, ApprovalStatus.TIMED_OUT, None, why)
            logger.warning("Not approved: %s", why)
            return Approval(
                approved=False, approvers=approved_by, reason=why, code=ApprovalCode.TIMED_OUT
            )
        problem = judge(answer, policy, request, run_id, expires_at, answered_at, approved_by)
        name = answer.approver.strip()
        async with await opsdb.connect() as conn:
            if problem is not None:
                await approvals.decide(conn, run_id, key, ApprovalStatus.REJECTED, name, problem)
            else:
                await approvals.decide(
                    conn, run_id, key, ApprovalStatus.APPROVED, name, answer.reason
                )
        if problem is not None:
            logger.warning("Not approved: %s", problem)
            return await _refused_answer(request, answer, problem, approved_by)
        logger.info("Approved (%d/%d) by %s: %s", number, needed, name, answer.reason)
        approved_by.append(name)
        reasons.append(f"{name}: {answer.reason or 'no reason given'}")
    return Approval(
        approved=True, approvers=approved_by, reason="; ".join(reasons), code=ApprovalCode.APPROVED
    )


async def _break_glass(
    request: ActionRequest,
    run_id: str,
    key: str,
    approved_by: list[str],
    reasons: list[str],
    waited_s: int,
) -> Approval:
    """The Policy's break-glass: one approver suffices after `waited_s` without a second answer
    (the act still re-checks that the outage persists before it runs). Paged, so nobody
    misses that a two-person act went ahead with one."""
    why = f"break-glass: no second approver within {waited_s} s; {', '.join(approved_by)} alone"
    async with await opsdb.connect() as conn:
        await approvals.decide(conn, run_id, key, ApprovalStatus.TIMED_OUT, None, why)
    get_run_logger().warning("Approved by break-glass: %s", why)
    await page(
        f"{request.action} on {request.target} goes ahead by break-glass: {why}",
        {"incident": request.incident_id, "key": request.idempotency_key},
    )
    return Approval(
        approved=True,
        approvers=approved_by,
        reason="; ".join([*reasons, why]),
        code=ApprovalCode.APPROVED,
    )


@flow(name="approval-gate", log_prints=False)
async def approval_gate(request: ActionRequest) -> Approval:
    """Wait for an operator to approve or reject one destructive action.

    Open this run in the UI → menu → Resume, then fill the form: tick approve, your name, the
    one-time code sent to you, and a reason."""
    return await _wait_for_approvals(request, _Pause(), "approval")


async def suspended_gate(request: ActionRequest, policy: Policy | None = None) -> Approval:
    """The gate inside the current (deployment) run, waiting with `suspend_flow_run`: the first
    pass announces, records and suspends (the process exits); after the answer the flow reruns
    from the top and comes back here, where each point's stored answer is checked."""
    digest = hashlib.sha256(f"{request.idempotency_key}|{scope(request)}".encode()).hexdigest()[:16]
    return await _wait_for_approvals(
        request, _Suspend(_current_run_id()), f"approval-{digest}", policy
    )


def judge(
    answer: ApprovalInput,
    policy: Policy,
    request: ActionRequest,
    run_id: str,
    expires_at: datetime,
    answered_at: datetime,
    already: list[str],
) -> str | None:
    """Why this answer does not approve `request` (None when it does): allowlist, distinct
    approvers, and — on a coded form — the one-time code, unexpired at `answered_at`."""
    code_ok: bool | None = None
    if isinstance(answer, CodedApprovalInput):
        code_ok = code_matches(
            approval_secret(),
            answer.code,
            run_id,
            scope(request),
            answer.approver,
            expires_at,
            answered_at,
        )
    return check_answer(
        answer,
        allowed=policy.approvers,
        already=already,
        code_ok=code_ok,
        requested_by=request.requested_by,
    )


async def _resumed_at(run_id: str, pause_key: str) -> datetime:
    """When the answer to this pause came: the state right after the pause with this key."""
    async with get_client() as client:
        states = await client.read_flow_run_states(UUID(run_id))
    states.sort(key=lambda s: s.timestamp or datetime.min.replace(tzinfo=UTC))
    paused = [
        i for i, s in enumerate(states) if s.is_paused() and s.state_details.pause_key == pause_key
    ]
    if paused and paused[-1] + 1 < len(states):
        stamp = states[paused[-1] + 1].timestamp
        if stamp is not None:
            return stamp.astimezone(UTC)
    return datetime.now(UTC)


def suspendable() -> bool:
    """A top-level run of a deployment can suspend (its process exits while it waits)."""
    if get_settings().approval_wait == "pause":
        return False
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    return bool(run and run.deployment_id and not run.parent_task_run_id)


async def request_approval(
    request: ActionRequest, *, keep_process: bool = False, policy: Policy | None = None
) -> Approval:
    """Wait for the approvals `request` needs: suspended in a deployment run, else in the
    approval-gate subflow, whose failure (Prefect's pause timeout) means "not approved".
    `keep_process`: always the subflow (a flow that holds a one-time secret in memory across
    the approval cannot rerun from the top). `policy`: the run's own Policy, if resolved."""
    if suspendable() and not keep_process:
        return await suspended_gate(request, policy)
    state = await approval_gate(request, return_state=True)
    if state.is_completed():
        result = await state.aresult()
        if isinstance(result, Approval):
            return result
    policy = await Policy.resolve()
    # Prefect fails a paused gate whose wait timed out; the break-glass reads what it approved
    run_id = state.state_details.flow_run_id
    if request.break_glass and policy.break_glass_after_s and run_id is not None:
        async with await opsdb.connect() as conn:
            first = await approvals.load(conn, str(run_id), "approval-1")
        if first is not None and first.status is ApprovalStatus.APPROVED and first.approver:
            glass = await approvals_break_glass_pause(request, str(run_id), first.approver, policy)
            if glass is not None:
                return glass
    waited = request.approval_timeout_s or policy.approval_timeout_s
    why = f"no approval within {waited} s ({state.name})"
    async with await opsdb.connect() as conn:
        await approvals.time_out_paused(conn, request.idempotency_key, why)
    return Approval(approved=False, reason=why, code=ApprovalCode.TIMED_OUT)


async def approvals_break_glass_pause(
    request: ActionRequest, run_id: str, first: str, policy: Policy
) -> Approval | None:
    """The paused gate ended on the second approver's (break-glass) timeout."""
    async with await opsdb.connect() as conn:
        second = await approvals.load(conn, run_id, "approval-2")
    if second is None or second.status is not ApprovalStatus.WAITING:
        return None
    waited = min(policy.approval_timeout_s, policy.break_glass_after_s or 0)
    return await _break_glass(request, run_id, "approval-2", [first], [first], waited)
