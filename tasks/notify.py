"""Telling humans: Slack incoming webhook (#support-agent-alerts) and PagerDuty Events v2.

Slack answers `ok`; PagerDuty answers 202 with the dedup key. 400s are permanent (a malformed
message will not improve), 429 and 5xx are retried once. The webhook URL and routing key are
secrets: they never appear in messages, results or errors.

PagerDuty's dedup key is the incident id (`runbook.incidents.Incident.id`, the one the intake pages
with): every trigger about one incident, and its resolve, then address the same PagerDuty alert —
a re-sent trigger does not page twice, and `resolve_pagerduty(pagerduty, incident.id)` closes it.
`pagerduty_severity()` turns an incident's severity (`P1`, `P2`, … or the intake's words) into the
Events v2 severity.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.pagerduty import PagerDuty
from blocks.slack import Slack
from runbook.alerts import Severity as IncidentSeverity
from runbook.errors import ConfigurationError, PermanentError
from tasks.http import exchange

Severity = Literal["critical", "error", "warning", "info"]
EventAction = Literal["trigger", "acknowledge", "resolve"]
_PRIORITY = re.compile(r"(?:p|sev)\s*-?\s*(\d+)")


def pagerduty_severity(severity: str | IncidentSeverity) -> Severity:
    """The Events v2 severity of an incident: P1 → critical, P2 → error, P3 and lower → warning;
    the intake's words (critical, error, warning, info, and the aliases it knows) keep their
    meaning. A severity nobody recognises pages as critical: never too quietly."""
    text = str(severity.value if isinstance(severity, IncidentSeverity) else severity)
    text = text.strip().lower()
    priority = _PRIORITY.fullmatch(text)
    if priority:
        level = int(priority.group(1))
        if level <= 1:
            return "critical"
        return "error" if level == 2 else "warning"
    if IncidentSeverity.is_known(text):
        mapped = IncidentSeverity.parse(text)
        if mapped is IncidentSeverity.CRITICAL:
            return "critical"
        if mapped is IncidentSeverity.ERROR:
            return "error"
        return "info" if mapped is IncidentSeverity.INFO else "warning"
    return "critical"


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    accepted: bool
    dedup_key: str | None = None


@task(name="send-slack", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def send_slack(
    slack: Slack, text: str, blocks: list[dict[str, Any]] | None = None
) -> Delivery:
    """Post one message to the alerts channel."""
    url = slack.webhook_url.get_secret_value()
    if not url:
        raise ConfigurationError("slack: no webhook URL configured")
    body: dict[str, Any] = {"text": text}
    if blocks:
        body["blocks"] = blocks
    async with slack.get_client() as client:
        response = await exchange("slack", lambda: client.post(url, json=body))
    if response.text.strip() != "ok":
        raise PermanentError("slack: webhook did not answer ok")
    return Delivery(channel="slack", accepted=True)


@task(name="send-pagerduty-event", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def send_pagerduty_event(
    pagerduty: PagerDuty,
    summary: str,
    dedup_key: str,
    action: EventAction = "trigger",
    severity: Severity | str = "critical",
    source: str = "runbook",
    custom_details: dict[str, Any] | None = None,
) -> Delivery:
    """Trigger, acknowledge or resolve the on-call alert `dedup_key` (the incident id).

    `severity` may be an incident's (`P2`, `error`, …): it is mapped by `pagerduty_severity()`."""
    event: dict[str, Any] = {"event_action": action, "dedup_key": dedup_key}
    if action == "trigger":
        event["payload"] = {
            "summary": summary[:1024],
            "source": source,
            "severity": pagerduty_severity(severity),
            "custom_details": custom_details or {},
        }
    return await _enqueue(pagerduty, event)


@task(name="resolve-pagerduty", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def resolve_pagerduty(pagerduty: PagerDuty, dedup_key: str) -> Delivery:
    """Close the on-call alert `dedup_key` (the incident id it was triggered with).

    A resolve carries no payload. PagerDuty drops a resolve with no open alert; after it, a
    trigger with the same key opens a new alert."""
    if not dedup_key:
        raise PermanentError("pagerduty: a resolve needs the dedup key of the alert")
    return await _enqueue(pagerduty, {"event_action": "resolve", "dedup_key": dedup_key})


async def _enqueue(pagerduty: PagerDuty, event: dict[str, Any]) -> Delivery:
    """POST one Events v2 event (the routing key is added here, in the body only)."""
    key = pagerduty.routing_key.get_secret_value()
    if not key:
        raise ConfigurationError("pagerduty: no routing key configured")
    body = {"routing_key": key, **event}
    async with pagerduty.get_client() as client:
        response = await exchange("pagerduty", lambda: client.post(pagerduty.events_url, json=body))
    try:
        answer = response.json()
    except ValueError:
        raise PermanentError("pagerduty: answer is not JSON") from None
    return Delivery(
        channel="pagerduty",
        accepted=answer.get("status") == "success",
        dedup_key=answer.get("dedup_key"),
    )
