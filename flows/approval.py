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

One wait per approver needed (two-person actions wait twice and require a different name).
Codes go to each approver's own channel.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from psycopg.rows import dict_row

from blocks.policy import Policy
from blocks.slack import Slack
from flows.notifications import notify, page, ui_link
from runbook import opsdb, slack_text
from runbook.actions import ActionRequest, action_class, approvals_needed
from runbook.approval import (
    ApprovalInput,
    CodedApprovalInput,
    approval_secret,
    check_answer,
    code_matches,
    describe_request,
    one_time_code,
    scope,
    secret_problem,
)
from runbook.errors import RunbookError
from runbook.safety import Approval
from runbook.settings import get_settings
from tasks.notify import send_slack

# the answer the approval sweeper resumes an expired suspended run with
TIMEOUT_APPROVER = "runbook: no answer in time"
# Prefect's own pause timeout for a suspended run: ours plus this grace, so the sweeper (every few
# seconds) always answers first; Prefect failing the run is the last resort when nothing sweeps
SUSPEND_GRACE_S = 300
GATE_KEY = "gate"


async def _record(
    run_id: str,
    request: ActionRequest,
    summary: str,
    link: str,
    expires_at: datetime,
    *,
    pause_key: str = GATE_KEY,
    mode: str = "pause",
) -> None:
    async with await opsdb.connect() as conn:
        await conn.execute(
            "INSERT INTO runbook.approvals (flow_run_id, pause_key, mode, idempotency_key,"
            " incident_id, action, target, summary, ui_url, status, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'waiting', %s)"
            " ON CONFLICT (flow_run_id, pause_key) DO UPDATE SET status = 'waiting',"
            " expires_at = EXCLUDED.expires_at, decided_at = NULL",
            (
                run_id,
                pause_key,
                mode,
                request.idempotency_key,
                request.incident_id,
                request.action,
                request.target,
                summary,
                link,
                expires_at,
            ),
        )


async def _decide(
    run_id: str, status: str, approver: str | None, reason: str, pause_key: str = GATE_KEY
) -> None:
    async with await opsdb.connect() as conn:
        await conn.execute(
            "UPDATE runbook.approvals SET status = %s, approver = %s, reason = %s,"
            " decided_at = now() WHERE flow_run_id = %s AND pause_key = %s",
            (status, approver, reason, run_id, pause_key),
        )


async def _load(run_id: str, pause_key: str) -> dict[str, Any] | None:
    async with await opsdb.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT status, approver, reason, expires_at FROM runbook.approvals"
            " WHERE flow_run_id = %s AND pause_key = %s",
            (run_id, pause_key),
        )
        return await cur.fetchone()


def gate_problem(policy: Policy, request: ActionRequest) -> str | None:
    """A configuration that cannot give a valid approval: fail closed (not approved, paged)
    instead of asking anyone through a channel that is not theirs."""
    needed = approvals_needed(policy, request)
    eligible = [
        a
        for a in policy.approvers
        if not request.requested_by or a.lower() != request.requested_by.strip().lower()
    ]
    if policy.require_code:
        if (problem := secret_problem()) is not None:
            return f"configuration error: {problem}"
        if not policy.approvers:
            return "the Policy requires approval codes but lists no approvers"
        missing = [a for a in policy.approvers if a not in policy.approver_webhooks]
        if missing:
            return (
                f"configuration error: approver {', '.join(missing)} has no channel of their own"
                " (RUNBOOK_APPROVER_WEBHOOKS); codes never go to the team channel"
            )
    if policy.approvers and len(eligible) < needed:
        return (
            f"{needed} approver(s) needed besides {request.requested_by}, who asked for this run;"
            f" the Policy lists {', '.join(policy.approvers)}"
        )
    return None


async def _refuse(request: ActionRequest, why: str, run_id: str, pause_key: str) -> Approval:
    await _decide(run_id, "rejected", None, why, pause_key)
    get_run_logger().error("Not approved: %s", why)
    paged = await page(
        f"Approval for {request.action} on {request.target} impossible: {why}",
        {"incident": request.incident_id, "key": request.idempotency_key},
    )
    return Approval(approved=False, reason=why, paged=paged)


async def _refused_answer(
    request: ActionRequest, answer: ApprovalInput, problem: str, approved_by: list[str]
) -> Approval:
    """An answer that tried to approve and was refused (wrong code, not on the list, the
    requester, a repeated name) is a possible forgery: page it. A plain rejection is not."""
    paged = False
    if answer.approve:
        paged = await page(
            f"Refused an approval of {request.action} on {request.target}: {problem}",
            {"incident": request.incident_id, "key": request.idempotency_key},
        )
    return Approval(approved=False, approvers=approved_by, reason=problem, paged=paged)


async def _send_codes(
    policy: Policy,
    request: ActionRequest,
    run_id: str,
    expires_at: datetime,
    link: str,
) -> list[str]:
    """Each approver's code to their own channel only; returns who could not be reached."""
    secret = approval_secret()
    unreachable = []
    for name in policy.approvers:
        if request.requested_by and name.lower() == request.requested_by.strip().lower():
            continue  # they asked for this run: they get no code
        hook = policy.approver_webhooks.get(name)
        if hook is None:
            unreachable.append(name)
            continue
        code = one_time_code(secret, run_id, scope(request), name, expires_at)
        try:
            await send_slack(
                Slack(webhook_url=hook),
                f"{name}: your one-time approval code for {request.action} on {request.target} "
                f"(incident {request.incident_id}) is {code}. It expires "
                f"{expires_at:%H:%M:%S} UTC. Approve at {link}",
            )
        except RunbookError:
            unreachable.append(name)
    return unreachable


@flow(name="approval-gate", log_prints=False)
async def approval_gate(request: ActionRequest) -> Approval:
    """Wait for an operator to approve or reject one destructive action.

    Open this run in the UI → menu → Resume, then fill the form: tick approve, your name, the
    one-time code sent to you, and a reason."""
    logger = get_run_logger()
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    run_id = str(ctx.flow_run.id)
    policy = await Policy.resolve()
    needed = approvals_needed(policy, request)
    form: type[ApprovalInput] = CodedApprovalInput if policy.require_code else ApprovalInput
    link = ui_link(run_id)
    approved_by: list[str] = []
    reasons: list[str] = []
    if (why := gate_problem(policy, request)) is not None:
        return await _refuse(request, why, run_id, GATE_KEY)

    for number in range(1, needed + 1):
        expires_at = (datetime.now(UTC) + timedelta(seconds=policy.approval_timeout_s)).replace(
            microsecond=0
        )
        description = describe_request(
            request,
            action_class=action_class(policy, request.action).value,
            expires_at=expires_at,
            approver_number=number,
            approvers_needed=needed,
            require_code=policy.require_code,
        )
        summary = f"{request.action} on {request.target}: {request.reason}"
        await _record(run_id, request, summary, link, expires_at)
        await _announce(policy, request, run_id, link, expires_at, number, needed)
        logger.info("Waiting for approval %d/%d of %s", number, needed, request.action)
        answer = await apause_flow_run(
            wait_for_input=form.with_initial_data(description=description),
            timeout=policy.approval_timeout_s,
            poll_interval=get_settings().approval_poll_s,
            key=f"approval-{number}",
        )
        problem = judge(answer, policy, request, run_id, expires_at, datetime.now(UTC), approved_by)
        if problem is not None:
            await _decide(run_id, "rejected", answer.approver, problem)
            logger.warning("Not approved: %s", problem)
            return await _refused_answer(request, answer, problem, approved_by)
        approved_by.append(answer.approver.strip())
        reasons.append(f"{answer.approver.strip()}: {answer.reason or 'no reason given'}")
        await _decide(run_id, "approved", answer.approver, answer.reason)
    return Approval(approved=True, approvers=approved_by, reason="; ".join(reasons))


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


async def _announce(
    policy: Policy,
    request: ActionRequest,
    run_id: str,
    link: str,
    expires_at: datetime,
    number: int,
    needed: int,
) -> None:
    """Codes to each approver's own channel, then the team's Slack message with the UI link.
    Never raises: a channel that fails is replaced by a page (the request reaches PagerDuty
    within seconds) and the act keeps waiting for a valid answer."""
    unreachable = (
        await _send_codes(policy, request, run_id, expires_at, link) if policy.require_code else []
    )
    text = (
        f":warning: Approval needed ({number}/{needed}) for *{request.action}* on "
        f"`{request.target}` — incident {request.incident_id}. "
        f"Why: {slack_text.escape(request.reason)}. "
        f"Expires {expires_at:%H:%M:%S} UTC. Open {link} → Resume "
        f"(or `runbook approve {run_id} --approver NAME --code CODE --reason TEXT`)."
    )
    team_told = await notify(text)
    if team_told and not unreachable:
        return
    problems = []
    if not team_told:
        problems.append("Slack did not take the approval request")
    if unreachable:
        problems.append(f"no code could be delivered to {', '.join(unreachable)}")
    await page(
        f"Approval needed for {request.action} on {request.target} "
        f"(incident {request.incident_id}): {'; '.join(problems)}. Open {link}",
        {"incident": request.incident_id, "key": request.idempotency_key, "link": link},
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


async def suspended_gate(request: ActionRequest) -> Approval:
    """The gate inside the current (deployment) run, waiting with `suspend_flow_run`.

    The first pass records the request, sends the codes and suspends: the process exits. After
    the answer the flow reruns from the top and comes back here: each approval point's answer is
    then returned by Prefect (same pause key) and checked — or read back from the ledger when an
    earlier pass already decided it."""
    logger = get_run_logger()
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    run_id = str(ctx.flow_run.id)
    policy = await Policy.resolve()
    needed = approvals_needed(policy, request)
    form: type[ApprovalInput] = CodedApprovalInput if policy.require_code else ApprovalInput
    link = ui_link(run_id)
    digest = hashlib.sha256(f"{request.idempotency_key}|{scope(request)}".encode()).hexdigest()[:16]
    approved_by: list[str] = []
    reasons: list[str] = []
    if (why := gate_problem(policy, request)) is not None:
        return await _refuse(request, why, run_id, f"approval-{digest}-1")
    for number in range(1, needed + 1):
        pause_key = f"approval-{digest}-{number}"
        row = await _load(run_id, pause_key)
        if row is not None and row["status"] == "approved":
            approved_by.append(row["approver"])
            reasons.append(f"{row['approver']}: {row['reason'] or 'no reason given'}")
            continue
        if row is not None and row["status"] in {"rejected", "timed_out"}:
            return Approval(
                approved=False,
                approvers=approved_by,
                reason=row["reason"] or row["status"],
                timed_out=row["status"] == "timed_out",
            )
        if row is None:
            expires_at = (datetime.now(UTC) + timedelta(seconds=policy.approval_timeout_s)).replace(
                microsecond=0
            )
            summary = f"{request.action} on {request.target}: {request.reason}"
            await _announce(policy, request, run_id, link, expires_at, number, needed)
            await _record(
                run_id, request, summary, link, expires_at, pause_key=pause_key, mode="suspend"
            )
            logger.info(
                "Suspending until approval %d/%d of %s (this process is freed)",
                number,
                needed,
                request.action,
            )
        else:
            expires_at = row["expires_at"]
        description = describe_request(
            request,
            action_class=action_class(policy, request.action).value,
            expires_at=expires_at,
            approver_number=number,
            approvers_needed=needed,
            require_code=policy.require_code,
        )
        # exits this process on the first pass; returns the stored answer after the resume
        answer = await asuspend_flow_run(
            wait_for_input=form.with_initial_data(description=description),
            timeout=policy.approval_timeout_s + SUSPEND_GRACE_S,
            key=pause_key,
        )
        answered_at = await _resumed_at(run_id, pause_key)
        late = answered_at > expires_at
        if late or (not answer.approve and answer.approver == TIMEOUT_APPROVER):
            why = f"no approval within {policy.approval_timeout_s} s"
            await _decide(run_id, "timed_out", None, why, pause_key)
            logger.warning("Not approved: %s", why)
            return Approval(approved=False, approvers=approved_by, reason=why, timed_out=True)
        problem = judge(answer, policy, request, run_id, expires_at, answered_at, approved_by)
        if problem is not None:
            await _decide(run_id, "rejected", answer.approver, problem, pause_key)
            logger.warning("Not approved: %s", problem)
            return await _refused_answer(request, answer, problem, approved_by)
        approved_by.append(answer.approver.strip())
        reasons.append(f"{answer.approver.strip()}: {answer.reason or 'no reason given'}")
        await _decide(run_id, "approved", answer.approver.strip(), answer.reason, pause_key)
    return Approval(approved=True, approvers=approved_by, reason="; ".join(reasons))


async def request_approval(request: ActionRequest) -> Approval:
    """Wait for the approvals `request` needs: suspended in a deployment run, else in the
    approval-gate subflow, whose failure (timeout included) means "not approved"."""
    if suspendable():
        return await suspended_gate(request)
    state = await approval_gate(request, return_state=True)
    if state.is_completed():
        result = await state.aresult()
        assert isinstance(result, Approval)
        return result
    policy = await Policy.resolve()
    why = f"no approval within {policy.approval_timeout_s} s ({state.name})"
    async with await opsdb.connect() as conn:
        await conn.execute(
            "UPDATE runbook.approvals SET status = 'timed_out', reason = %s, decided_at = now()"
            " WHERE idempotency_key = %s AND status = 'waiting' AND mode = 'pause'",
            (why, request.idempotency_key),
        )
    return Approval(approved=False, reason=why, timed_out=True)
