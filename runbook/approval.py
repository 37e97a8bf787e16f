"""Approvals: the form an operator fills, one-time codes, and the request's description.

The open-source Prefect UI has no user identity, so an approval carries a one-time code that the
flow sent to that approver's own channel: HMAC-SHA256(approval secret, run id | action | approver |
expiry) shown as 8 digits. Whoever types the right code for a name has that name's channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from prefect.input import RunInput
from pydantic import Field

from runbook.actions import ActionRequest
from runbook.errors import ConfigurationError
from runbook.settings import get_settings


class ApprovalInput(RunInput):
    """What the operator fills in the Prefect UI (or `runbook approve/reject` sends)."""

    approve: bool = Field(False, description="Tick to approve. Leave unticked to reject.")
    approver: str = Field(description="Your name, as listed in the Policy's approvers")
    reason: str = Field("", description="Why you approve or reject (goes into the timeline)")


class CodedApprovalInput(ApprovalInput):
    """The same form plus the one-time code sent to the approver's channel."""

    code: str = Field("", description="The one-time code sent to you (Slack / PagerDuty)")


MIN_SECRET_BYTES = 32


def secret_problem() -> str | None:
    """Why this process may not use approval codes (None when it may): outside the demo
    `RUNBOOK_APPROVAL_SECRET` must be set and at least 32 bytes."""
    settings = get_settings()
    configured = settings.approval_secret
    if configured is None or not configured.get_secret_value():
        if settings.demo:
            return None
        return (
            "RUNBOOK_APPROVAL_SECRET is not set: approval codes need a secret of at least "
            f"{MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )
    size = len(configured.get_secret_value().encode())
    if size < MIN_SECRET_BYTES:
        return f"RUNBOOK_APPROVAL_SECRET is {size} bytes; it must be at least {MIN_SECRET_BYTES}"
    return None


def approval_secret() -> bytes:
    """`RUNBOOK_APPROVAL_SECRET`; in the demo only, a random secret kept in `$RUNBOOK_HOME`
    (mode 0600, written atomically so concurrent first uses agree on one secret)."""
    problem = secret_problem()
    if problem is not None:
        raise ConfigurationError(problem)
    configured = get_settings().approval_secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
    path = Path(get_settings().home).expanduser() / "approval-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".approval-secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process won the race: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


def scope(request: ActionRequest) -> str:
    """What an approval approves: the action, its target and its exact parameters. Codes, pause
    keys and the ledger's approval are bound to it, so an answer never carries over to a
    different act (say, a rerun that would now roll back to another deployment)."""
    params = json.dumps(request.params, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{request.target}|{params}".encode()).hexdigest()[:16]
    return f"{request.action}|{digest}"


def one_time_code(
    secret: bytes, run_id: str, action: str, approver: str, expires_at: datetime
) -> str:
    """Eight digits bound to this run, action, approver and expiry."""
    message = f"{run_id}|{action}|{approver.strip().lower()}|{int(expires_at.timestamp())}"
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 100_000_000:08d}"


def code_matches(
    secret: bytes,
    code: str,
    run_id: str,
    action: str,
    approver: str,
    expires_at: datetime,
    now: datetime,
) -> bool:
    """Constant-time check of a submitted code, and that it has not expired."""
    if now > expires_at:
        return False
    submitted = code.strip().replace(" ", "")
    if not (submitted.isascii() and submitted.isdigit()):
        return False
    expected = one_time_code(secret, run_id, action, approver, expires_at)
    return hmac.compare_digest(expected, submitted)


def check_answer(
    answer: ApprovalInput,
    *,
    allowed: list[str],
    already: list[str],
    code_ok: bool | None,
    requested_by: str | None = None,
) -> str | None:
    """Why this answer does not count as an approval (None when it does)."""
    name = answer.approver.strip()
    if not answer.approve:
        return f"rejected by {name or 'an operator'}: {answer.reason or 'no reason given'}"
    if not name:
        return "approval without an approver name"
    if requested_by and name.lower() == requested_by.strip().lower():
        return f"{name} asked for this run and cannot approve its own act"
    if allowed and name.lower() not in {a.lower() for a in allowed}:
        return f"{name} is not on the Policy's approver list"
    if name.lower() in {a.lower() for a in already}:
        return f"{name} already approved; a second, different approver is required"
    if code_ok is False:
        return f"the one-time code for {name} did not match or has expired"
    return None


def describe_request(
    request: ActionRequest,
    *,
    action_class: str,
    expires_at: datetime,
    approver_number: int,
    approvers_needed: int,
    require_code: bool,
) -> str:
    """The markdown the approval form shows: seen, exact action, why, and if rejected."""
    lines = [
        f"### Approve `{request.action}` on `{request.target}`?",
        "",
        f"**Incident** `{request.incident_id}` · **class** {action_class} · "
        f"**expires** {expires_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        + (f" · approver {approver_number} of {approvers_needed}" if approvers_needed > 1 else ""),
        "",
        f"**Why:** {request.reason or 'see evidence'}",
        "",
    ]
    if request.evidence:
        lines += ["**What was seen:**", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in request.evidence.items()]
        lines.append("")
    params = ", ".join(f"{k}={v}" for k, v in request.params.items()) or "no parameters"
    lines += [
        f"**Exact action:** `{request.action}` on `{request.target}` ({params}).",
        "",
        "**If rejected or not answered in time:** nothing is changed; the incident is escalated "
        "to the on-call engineer through PagerDuty.",
        "",
        "**After approval** the flow re-checks the symptom and does not act if it is gone.",
        "",
        "To approve: tick *approve*, enter your name"
        + (" and the one-time code sent to you" if require_code else "")
        + ", add a reason, then Resume.",
    ]
    return "\n".join(lines)
