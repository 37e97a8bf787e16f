"""Telling humans from a flow: Slack for information, PagerDuty to wake someone.

A failed notification never stops a remediation: it is logged (without secrets) and the flow
goes on; the timeline records what was sent.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from blocks.pagerduty import PagerDuty
from blocks.slack import Slack
from runbook.errors import RunbookError
from tasks.notify import send_pagerduty_event, send_slack


async def notify(text: str) -> bool:
    """Post to the alerts channel; False (and a warning) when Slack could not be told."""
    try:
        await send_slack(await Slack.resolve(), text)
    except RunbookError as exc:
        get_run_logger().warning("Slack notification failed: %s", exc)
        return False
    return True


async def page(summary: str, details: dict[str, Any]) -> None:
    """Trigger a PagerDuty incident (dedup on the incident id, so repeats do not re-page)."""
    dedup = str(details.get("incident") or details.get("key") or summary)[:255]
    try:
        await send_pagerduty_event(
            await PagerDuty.resolve(), summary, dedup, custom_details=details
        )
    except RunbookError as exc:
        get_run_logger().warning("PagerDuty page failed: %s", exc)
