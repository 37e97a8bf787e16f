"""Telling humans: Slack incoming webhook (#support-agent-alerts) and PagerDuty Events v2.

Slack answers `ok`; PagerDuty answers 202 with the dedup key. 400s are permanent (a malformed
message will not improve), 429 and 5xx are retried once. The webhook URL and routing key are
secrets: they never appear in messages, results or errors.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from pydantic import BaseModel, ConfigDict

from blocks.pagerduty import PagerDuty
from blocks.slack import Slack
from runbook.errors import ConfigurationError, PermanentError
from tasks.http import exchange

Severity = Literal["critical", "error", "warning", "info"]
EventAction = Literal["trigger", "acknowledge", "resolve"]


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    accepted: bool
    dedup_key: str | None = None


@task(name="send-slack", retries=0)
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


@task(name="send-pagerduty-event", retries=0)
async def send_pagerduty_event(
    pagerduty: PagerDuty,
    summary: str,
    dedup_key: str,
    action: EventAction = "trigger",
    severity: Severity = "critical",
    source: str = "runbook",
    custom_details: dict[str, Any] | None = None,
) -> Delivery:
    """Trigger, acknowledge or resolve the on-call incident `dedup_key`."""
    key = pagerduty.routing_key.get_secret_value()
    if not key:
        raise ConfigurationError("pagerduty: no routing key configured")
    event: dict[str, Any] = {"routing_key": key, "event_action": action, "dedup_key": dedup_key}
    if action == "trigger":
        event["payload"] = {
            "summary": summary[:1024],
            "source": source,
            "severity": severity,
            "custom_details": custom_details or {},
        }
    async with pagerduty.get_client() as client:
        response = await exchange(
            "pagerduty", lambda: client.post(pagerduty.events_url, json=event)
        )
    try:
        answer = response.json()
    except ValueError:
        raise PermanentError("pagerduty: answer is not JSON") from None
    return Delivery(
        channel="pagerduty",
        accepted=answer.get("status") == "success",
        dedup_key=answer.get("dedup_key"),
    )
