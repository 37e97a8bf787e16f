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
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from psycopg.rows import dict_row

from blocks.policy import Policy
from blocks.slack import Slack
from runbook import opsdb
from runbook.actions import ActionRequest, action_class, approvals_needed
from runbook.approval import (
    ApprovalInput,
    CodedApprovalInput,
    approval_secret,
    check_answer,
    code_matches,
    describe_request,
    one_time_code,
)
from runbook.safety import Approval
from runbook.settings import get_settings
from tasks.notify import send_slack


def ui_link(flow_run_id: str) -> str:
    """The Prefect V2 UI page of a flow run (where the Resume form is)."""
    base = (PREFECT_UI_URL.value() or "").rstrip("/")
    if not base:
        base = (PREFECT_API_URL.value() or "http://127.0.0.1:4200/api").rstrip("/")
        base = base.removesuffix("/api")
    base = base.removesuffix("/v2")
    return f"{base}/v2/runs/flow-run/{flow_run_id}"


# the answer the approval sweeper resumes an expired suspended run with
TIMEOUT_APPROVER = "runbook: no answer in time"
# Prefect's own pause timeout for a suspended run: ours plus this grace, so the sweeper (every few
# seconds) always answers first; Prefect failing the run is the last resort when nothing sweeps
SUSPEND_GRACE_S = 300
GATE_KEY = "gate"


def scope(request: ActionRequest) -> str:
    """What an approval approves: the action, its target and its exact parameters. Codes and
    pause keys are bound to it, so an answer never carries over to a different act (say, a
    rerun that would now roll back to another deployment)."""
    params = json.dumps(request.params, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{request.target}|{params}".encode()).hexdigest()[:16]
    return f"{request.action}|{digest}"


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


async def _send_codes(
    policy: Policy,
    slack: Slack,
    request: ActionRequest,
    run_id: str,
    expires_at: datetime,
    link: str,
) -> None:
    secret = approval_secret()
    for name in policy.approvers:
        code = one_time_code(secret, run_id, scope(request), name, expires_at)
        hook = policy.approver_webhooks.get(name)
        target = Slack(webhook_url=hook) if hook is not None else slack
        await send_slack(
            target,
            f"{name}: your one-time approval code for {request.action} on {request.target} "
            f"(incident {request.incident_id}) is {code}. It expires "
            f"{expires_at:%H:%M:%S} UTC. Approve at {link}",
        )


@flow(name="approval-gate", log_prints=False)
async def approval_gate(request: ActionRequest) -> Approval:
    """Wait for an operator to approve or reject one destructive action.

    Open this run in the UI → menu → Resume, then fill the form: tick approve, your name, the
    one-time code sent to you, and a reason."""
    logger = get_run_logger()
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    run_id = str(ctx.flow_run.id)
    policy, slack = await Policy.resolve(), await Slack.resolve()
    needed = approvals_needed(policy, request)
    form: type[ApprovalInput] = CodedApprovalInput if policy.require_code else ApprovalInput
    link = ui_link(run_id)
    approved_by: list[str] = []
    reasons: list[str] = []
    if policy.require_code and not policy.approvers:
        why = "the Policy requires approval codes but lists no approvers"
        await _decide(run_id, "rejected", None, why)
        return Approval(approved=False, reason=why)

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
        await _announce(policy, slack, request, run_id, link, expires_at, number, needed)
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
            return Approval(approved=False, approvers=approved_by, reason=problem)
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
    return check_answer(answer, allowed=policy.approvers, already=already, code_ok=code_ok)


async def _announce(
    policy: Policy,
    slack: Slack,
    request: ActionRequest,
    run_id: str,
    link: str,
    expires_at: datetime,
    number: int,
    needed: int,
) -> None:
    """Codes to each approver's channel, then the team's Slack message with the UI link."""
    if policy.require_code:
        await _send_codes(policy, slack, request, run_id, expires_at, link)
    await send_slack(
        slack,
        f":warning: Approval needed ({number}/{needed}) for *{request.action}* on "
        f"`{request.target}` — incident {request.incident_id}. Why: {request.reason}. "
        f"Expires {expires_at:%H:%M:%S} UTC. Open {link} → Resume "
        f"(or `runbook approve {run_id} --approver NAME --code CODE --reason TEXT`).",
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
    policy, slack = await Policy.resolve(), await Slack.resolve()
    needed = approvals_needed(policy, request)
    form: type[ApprovalInput] = CodedApprovalInput if policy.require_code else ApprovalInput
    link = ui_link(run_id)
    digest = hashlib.sha256(f"{request.idempotency_key}|{scope(request)}".encode()).hexdigest()[:16]
    approved_by: list[str] = []
    reasons: list[str] = []
    if policy.require_code and not policy.approvers:
        return Approval(
            approved=False, reason="the Policy requires approval codes but lists no approvers"
        )
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
            # announce first: a failed Slack call is retried with the row still unwritten
            await _announce(policy, slack, request, run_id, link, expires_at, number, needed)
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
            return Approval(approved=False, approvers=approved_by, reason=problem)
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
