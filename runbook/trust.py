"""Start-up checks of the trust boundary: refuse to run a process that would let the Prefect API,
or a missing secret, decide whether a destructive act happens (docs/approvals.md "Trust model").

Each check returns one clear line (what is wrong and how to fix it) or None.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from runbook.approval import secret_problem
from runbook.settings import Settings


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prefect_api_problem(
    api_url: str | None, auth_string: str | None, api_key: str | None
) -> str | None:
    """A Prefect API off this machine must require credentials: whoever can write to it can edit
    blocks and resume runs."""
    if not api_url or is_loopback_url(api_url):
        return None
    if auth_string or api_key:
        return None
    return (
        f"the Prefect API at {urlsplit(api_url).hostname} is not on loopback and no Prefect auth is"
        " configured (set PREFECT_API_AUTH_STRING or PREFECT_API_KEY), or pass"
        " --insecure-prefect-api to accept that anyone who reaches it can resume runs"
    )


def current_prefect_api_problem() -> str | None:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    auth = PREFECT_API_AUTH_STRING.value()
    key = PREFECT_API_KEY.value()
    return prefect_api_problem(
        PREFECT_API_URL.value(),
        auth.get_secret_value() if auth else None,
        key.get_secret_value() if key else None,
    )


def approver_channel_problems(settings: Settings) -> list[str]:
    """Coded approvals (and two-person ones) send each approver a code on a channel of their
    own; an approver without one could only be reached through the team channel, so that is a
    configuration error, never a fallback."""
    names = [a.strip() for a in settings.approvers.split(",") if a.strip()]
    hooks = {k.lower() for k, v in settings.approver_webhooks.items() if v.get_secret_value()}
    if not settings.require_code:
        return []
    return [
        f"approver {name} has no channel of their own: add it to RUNBOOK_APPROVER_WEBHOOKS"
        for name in names
        if name.lower() not in hooks
    ]


def acting_process_problems(settings: Settings) -> list[str]:
    """What stops `runbook serve` / `runbook sweep` (processes that run or answer approvals)."""
    problems = []
    secret = secret_problem()
    if secret is not None:
        problems.append(secret)
    problems += approver_channel_problems(settings)
    return problems
