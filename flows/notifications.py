"""Telling humans from a flow: Slack for information, PagerDuty to wake someone.

Always tell a human, through a channel that still works:
* every message goes through the durable outbox (`runbook.notify_queue`): written first, sent at
  once, retried by `runbook serve` / `runbook sweep` when the first attempt fails;
* a page that PagerDuty does not accept falls back to Slack at once (and is retried);
  `page()` returns True only when PagerDuty accepted it;
* a failed notification never fails the run: it is logged (without secrets) and the flow goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from blocks.email import Email
from blocks.pagerduty import PagerDuty
from blocks.slack import Slack
from runbook import notify_queue, opsdb
from runbook.errors import RunbookError
from runbook.notify_queue import Notice
from tasks.email import send_email
from tasks.notify import resolve_pagerduty, send_pagerduty_event, send_slack

_log = logging.getLogger("runbook.notifications")


def _logger() -> Any:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return _log


def _in_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


async def _send(notice: Notice) -> None:
    """One attempt; raises a RunbookError when the channel did not take it."""
    if notice.channel == "slack":
        slack = await Slack.resolve()
        call = send_slack if _in_run() else send_slack.fn
        await call(slack, notice.body)
        return
    if notice.channel == "email":
        email = await Email.resolve()
        mail = send_email if _in_run() else send_email.fn
        subject = str(notice.details.get("subject") or notice.body.splitlines()[0][:120])
        to = notice.details.get("to")
        await mail(email, subject, notice.body, [str(a) for a in to] if to else None)
        return
    pagerduty = await PagerDuty.resolve()
    details = dict(notice.details)
    severity = str(details.pop("severity", "critical"))
    dedup = notice.dedup_key or str(details.get("incident") or notice.body[:255])
    if notice.channel == "pagerduty-resolve":
        resolve = resolve_pagerduty if _in_run() else resolve_pagerduty.fn
        delivery = await resolve(pagerduty, dedup)
    else:
        call_pd = send_pagerduty_event if _in_run() else send_pagerduty_event.fn
        delivery = await call_pd(
            pagerduty, notice.body, dedup, severity=severity, custom_details=details
        )
    if not delivery.accepted:
        raise RunbookError("pagerduty: event not accepted")


async def _deliver(notice: Notice, conn: Any | None) -> tuple[bool, bool]:
    """(sent, out of attempts)."""
    try:
        await _send(notice)
    except Exception as exc:  # any failure is one more attempt, never the run's end
        message = str(exc) if isinstance(exc, RunbookError) else type(exc).__name__
        _logger().warning("%s notification failed: %s", notice.channel, message)
        if conn is None:
            return False, True
        return False, await notify_queue.failed_attempt(conn, notice.id, message)
    if conn is not None:
        await notify_queue.sent(conn, notice.id)
    return True, False


async def _queue_and_send(
    channel: str, body: str, details: dict[str, Any] | None = None, dedup: str | None = None
) -> bool:
    try:
        conn = await opsdb.connect()
    except Exception as exc:  # ops database down: still try the channel itself
        _logger().warning(
            "notification outbox unavailable (%s): sending directly", type(exc).__name__
        )
        notice = Notice(
            id=0, channel=channel, dedup_key=dedup, body=body, details=details or {}, attempts=0
        )
        return (await _deliver(notice, None))[0]
    async with conn:
        notice = await notify_queue.enqueue(conn, channel, body, details, dedup)
        return (await _deliver(notice, conn))[0]


async def notify(text: str) -> bool:
    """Post to the alerts channel; False (and a warning) when Slack did not take it now (the
    outbox retries it)."""
    return await _queue_and_send("slack", text)


async def page(summary: str, details: dict[str, Any], severity: str = "critical") -> bool:
    """Trigger a PagerDuty incident (dedup on the incident id, so repeats do not re-page;
    `severity` P1/P2/… or critical/error/warning). True only when PagerDuty accepted it;
    otherwise Slack is told at once (and the page is retried by the outbox)."""
    dedup = str(details.get("incident") or details.get("key") or summary)[:255]
    if await _queue_and_send("pagerduty", summary, {**details, "severity": severity}, dedup):
        return True
    await notify(f":rotating_light: PAGE NOT DELIVERED (PagerDuty did not accept it) — {summary}")
    await notify_email(f"PAGE NOT DELIVERED: {summary[:120]}", summary)
    return False


def ui_link(flow_run_id: str) -> str:
    """The Prefect V2 UI page of a flow run (where the Resume form is)."""
    base = (PREFECT_UI_URL.value() or "").rstrip("/")
    if not base:
        base = (PREFECT_API_URL.value() or "http://127.0.0.1:4200/api").rstrip("/")
        base = base.removesuffix("/api")
    base = base.removesuffix("/v2")
    return f"{base}/v2/runs/flow-run/{flow_run_id}"


async def page_failed_run(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_failure` / `on_crashed` hook of every runbook flow: page with the run's link and the
    last step its incident timeline recorded. One page per run (PagerDuty dedups on the
    incident when the run had one)."""
    params = dict(getattr(flow_run, "parameters", {}) or {})
    incident = params.get("incident_id")
    last_step = "no step recorded"
    if incident:
        try:
            async with await opsdb.connect() as conn:
                cur = await conn.execute(
                    "SELECT kind, summary FROM runbook.action_events WHERE incident_id = %s"
                    " ORDER BY id DESC LIMIT 1",
                    (incident,),
                )
                row = await cur.fetchone()
            if row:
                last_step = f"{row[0]}: {row[1]}"[:300]
        except Exception as exc:  # the page matters more than the detail
            last_step = f"unknown (ops database: {type(exc).__name__})"
    link = ui_link(str(flow_run.id))
    message = (state.message or "").splitlines()[0][:200] if state.message else ""
    await page(
        f"{flow.name} run {flow_run.name} ended {state.name}: {message or 'no message'}."
        f" Last step: {last_step}. {link}",
        {
            "key": f"run-failed:{flow_run.id}",
            "incident": incident or f"run-failed:{flow_run.id}",
            "flow": flow.name,
            "flow_run": str(flow_run.id),
            "link": link,
            "last_step": last_step,
        },
    )


async def notify_email(subject: str, body: str, to: list[str] | None = None) -> bool:
    """Mail the ops mailbox (runbook "Alert Channels": ops@example.com), or `to` (one of our own
    contacts, e.g. Security), through the outbox; False when it did not go now (or email is not
    configured: then it is logged, not retried). Never for secrets: the outbox keeps the body."""
    if not (await Email.resolve()).configured:
        _logger().info("email not configured (RUNBOOK_SMTP_HOST): %s", subject)
        return False
    details: dict[str, Any] = {"subject": subject}
    if to:
        details["to"] = list(to)
    return await _queue_and_send("email", body, details)


async def resolve_page(incident_id: str) -> bool:
    """Resolve the incident's PagerDuty alert (same dedup key as its pages), through the outbox."""
    return await _queue_and_send("pagerduty-resolve", f"resolve {incident_id}", {}, incident_id)


async def flush_outbox(limit: int = 50) -> int:
    """Retry due notices (called by `runbook serve` / `runbook sweep`); returns how many went."""
    async with await opsdb.connect() as conn:
        due = await notify_queue.claim_due(conn, limit)
        delivered = 0
        for notice in due:
            ok, exhausted = await _deliver(notice, conn)
            delivered += ok
            if exhausted and notice.channel.startswith("pagerduty"):
                fallback = await notify_queue.enqueue(
                    conn,
                    "slack",
                    f":rotating_light: PAGE NEVER DELIVERED (PagerDuty failed"
                    f" {notify_queue.MAX_ATTEMPTS} times) — {notice.body}",
                )
                await _deliver(fallback, conn)
    return delivered
