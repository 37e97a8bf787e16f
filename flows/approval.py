"""The approval gate: a subflow that pauses for an operator's answer in the Prefect UI.

A subflow, because a pause timeout always ends its run Failed: the parent reads that failure as
"not approved" and carries on in a clear state. One pause per approver needed (two-person actions
pause twice and require a different name). Codes go to each approver's own channel.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.flow_runs import apause_flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

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


async def _record(
    run_id: str, request: ActionRequest, summary: str, link: str, expires_at: datetime
) -> None:
    async with await opsdb.connect() as conn:
        await conn.execute(
            "INSERT INTO runbook.approvals (flow_run_id, idempotency_key, incident_id, action,"
            " target, summary, ui_url, status, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'waiting', %s)"
            " ON CONFLICT (flow_run_id) DO UPDATE SET status = 'waiting', expires_at ="
            " EXCLUDED.expires_at, decided_at = NULL",
            (
                run_id,
                request.idempotency_key,
                request.incident_id,
                request.action,
                request.target,
                summary,
                link,
                expires_at,
            ),
        )


async def _decide(run_id: str, status: str, approver: str | None, reason: str) -> None:
    async with await opsdb.connect() as conn:
        await conn.execute(
            "UPDATE runbook.approvals SET status = %s, approver = %s, reason = %s,"
            " decided_at = now() WHERE flow_run_id = %s",
            (status, approver, reason, run_id),
        )


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
        code = one_time_code(secret, run_id, request.action, name, expires_at)
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
        if policy.require_code:
            await _send_codes(policy, slack, request, run_id, expires_at, link)
        await send_slack(
            slack,
            f":warning: Approval needed ({number}/{needed}) for *{request.action}* on "
            f"`{request.target}` — incident {request.incident_id}. Why: {request.reason}. "
            f"Expires {expires_at:%H:%M:%S} UTC. Open {link} → Resume "
            f"(or `runbook approve {run_id} --approver NAME --code CODE --reason TEXT`).",
        )
        logger.info("Waiting for approval %d/%d of %s", number, needed, request.action)
        answer = await apause_flow_run(
            wait_for_input=form.with_initial_data(description=description),
            timeout=policy.approval_timeout_s,
            poll_interval=get_settings().approval_poll_s,
            key=f"approval-{number}",
        )
        code_ok: bool | None = None
        if isinstance(answer, CodedApprovalInput):
            code_ok = code_matches(
                approval_secret(),
                answer.code,
                run_id,
                request.action,
                answer.approver,
                expires_at,
                datetime.now(UTC),
            )
        problem = check_answer(
            answer, allowed=policy.approvers, already=approved_by, code_ok=code_ok
        )
        if problem is not None:
            await _decide(run_id, "rejected", answer.approver, problem)
            logger.warning("Not approved: %s", problem)
            return Approval(approved=False, approvers=approved_by, reason=problem)
        approved_by.append(answer.approver.strip())
        reasons.append(f"{answer.approver.strip()}: {answer.reason or 'no reason given'}")
        await _decide(run_id, "approved", answer.approver, answer.reason)
    return Approval(approved=True, approvers=approved_by, reason="; ".join(reasons))


async def request_approval(request: ActionRequest) -> Approval:
    """Run the gate as a subflow; its failure (timeout included) means "not approved"."""
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
            " WHERE idempotency_key = %s AND status = 'waiting'",
            (why, request.idempotency_key),
        )
    return Approval(approved=False, reason=why, timed_out=True)
