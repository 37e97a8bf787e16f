"""What a waiting approval tells people, and when a configuration cannot approve at all.

Codes go only to each approver's own channel (`RUNBOOK_APPROVER_WEBHOOKS`); the team's Slack
gets the request with the UI link. Nothing here raises: a channel that fails is replaced by a
page, and the act keeps waiting for a valid answer.
"""

from __future__ import annotations

from datetime import datetime

from blocks.policy import Policy
from blocks.slack import Slack
from flows.notifications import notify, page
from runbook import slack_text
from runbook.actions import ActionRequest, approvals_needed
from runbook.approval import approval_secret, one_time_code, scope, secret_problem
from runbook.errors import RunbookError
from tasks.notify import send_slack


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


async def send_codes(
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


async def announce(
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
        await send_codes(policy, request, run_id, expires_at, link) if policy.require_code else []
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
