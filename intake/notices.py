"""What intake tells humans, one outbox row each: the Slack message and the PagerDuty page.

    slack   an incident no flow handles (triage), or whose flow could not start (the row's
            target says why); alert text is escaped (`runbook.slack_text`), so an alert titled
            `<!channel>` notifies nobody and shows as typed
    page    PagerDuty Events v2 `trigger`, dedup key = incident id: a remediation that cannot
            start needs a human now, not when someone reads Slack

A failure that may pass (connection refused, 5xx, 429) raises `DispatchFailed` and the row is
retried with backoff, never sooner than the answer's `Retry-After`; a refusal (4xx) or a channel
that is not configured finishes the row with its reason, so nothing loops. Webhook URLs and
routing keys are secrets: no result, log line or error names them.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from blocks.pagerduty import PagerDuty
from blocks.slack import Slack
from runbook.incidents import Incident
from runbook.settings import get_settings
from runbook.slack_text import clip, escape
from tasks.http import retry_after

log = logging.getLogger("intake.notices")

SLACK_LIMIT = 3000


class DispatchFailed(Exception):
    """An attempt failed and may succeed later; `str()` is one safe line for logs and the row.
    `retry_after`: the seconds a 429 asked us to wait (the dispatcher waits at least that)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def slack_text(incident: Incident, reason: str = "") -> str:
    """The Slack message for an incident: every alert-derived field escaped, then clipped."""
    alert = (
        f"alert *{escape(incident.title[:300])}* ({escape(incident.severity.value)},"
        f" from {escape(', '.join(incident.sources))}) on {escape(incident.target)}:"
        f" {escape(incident.summary[:1500])}"
    )
    if reason.startswith("reopened #"):  # migration 103: a flap after the flow run finished
        flow = f"`{escape(incident.flow)}`" if incident.flow else "the runbook flow"
        head = (
            f":repeat: Back again — {alert} was resolved and fired again ({escape(reason)});"
            f" {flow} already ran for this incident and is not run twice within the cool-down:"
            " a human should look; on-call is being paged"
        )
    elif reason:
        flow = f" `{escape(incident.flow)}`" if incident.flow else ""
        head = (
            f":rotating_light: Triage needed — the runbook flow{flow} could not start"
            f" ({escape(reason)}), nobody is remediating {alert}; on-call is being paged"
        )
    elif incident.flow:
        head = f":rotating_light: Runbook flow `{escape(incident.flow)}` is handling {alert}"
    else:
        head = f":rotating_light: Triage needed — no runbook flow handles {alert}"
    tail = f" — incident {incident.id}"
    return clip(head, SLACK_LIMIT - len(tail)) + tail


async def notify_slack(incident: Incident, reason: str = "") -> str:
    """Post the message to the Slack incoming webhook (a `Slack` block, else settings)."""
    try:
        slack: Any = await Slack.resolve()
    except Exception:  # Prefect API down: fall back to the environment
        slack = Slack.from_settings(get_settings())
    url = slack.webhook_url.get_secret_value()
    if not url:
        log.warning("incident %s: no Slack webhook configured", incident.id)
        return "skipped: slack not configured"
    try:
        async with slack.get_client() as http:
            response = await http.post(url, json={"text": slack_text(incident, reason)})
    except httpx.HTTPError as exc:
        raise DispatchFailed(f"Slack unreachable: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise DispatchFailed(
            f"Slack answered {response.status_code}", retry_after(response.headers)
        )
    if response.status_code >= 400:
        # permanent (invalid_payload, channel_not_found, archived): record it, do not loop
        log.warning("incident %s: Slack refused (%d)", incident.id, response.status_code)
        return f"failed: slack {response.status_code}"
    return "slack ok"


def page_summary(incident: Incident, reason: str) -> str:
    flow = f" {incident.flow}" if incident.flow else ""
    if reason.startswith("reopened #"):
        return (
            f"Back again after runbook flow{flow} ran ({reason}; not run twice):"
            f" {incident.title[:300]} on {incident.target} — {incident.summary[:400]}"
        )[:1024]
    return (
        f"Runbook flow{flow} could not start ({reason}): {incident.title[:300]} on"
        f" {incident.target} — {incident.summary[:400]}"
    )[:1024]


async def page(incident: Incident, reason: str) -> str:
    """Trigger a PagerDuty incident (Events v2 `/v2/enqueue`) keyed by the incident id.

    Sent here rather than through `tasks.notify` (a Prefect task): importing Prefect's task API
    would reconfigure the intake process's logging."""
    try:
        pagerduty: Any = await PagerDuty.resolve()
    except Exception:  # Prefect API down: fall back to the environment
        pagerduty = PagerDuty.from_settings(get_settings())
    key = pagerduty.routing_key.get_secret_value()
    if not key:
        log.warning("incident %s: no PagerDuty routing key configured", incident.id)
        return "skipped: pagerduty not configured"
    event = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": incident.id,
        "payload": {
            "summary": page_summary(incident, reason),
            "source": "runbook-intake",
            "severity": incident.severity.value,
            "custom_details": {
                "incident": incident.id,
                "route": incident.route,
                "flow": incident.flow,
                "reason": reason,
                "target": incident.target,
                "sources": list(incident.sources),
                "alerts": incident.alert_count,
            },
        },
    }
    try:
        async with pagerduty.get_client() as http:
            response = await http.post(pagerduty.events_url, json=event)
    except httpx.HTTPError as exc:
        raise DispatchFailed(f"PagerDuty unreachable: {type(exc).__name__}") from None
    code = response.status_code
    if code == 429 or code >= 500:
        raise DispatchFailed(f"PagerDuty answered {code}", retry_after(response.headers))
    if code >= 400:  # an invalid event (or key) will not improve: record it, do not loop
        log.warning("incident %s: PagerDuty refused the event (%d)", incident.id, code)
        return f"failed: pagerduty {code}"
    try:
        accepted = response.json().get("status") == "success"
    except (ValueError, AttributeError):
        accepted = False
    return "pagerduty ok" if accepted else "failed: pagerduty did not accept the event"
