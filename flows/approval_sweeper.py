"""The approval sweeper: answers "timed out" for suspended runs nobody approved in time, and
retries notifications whose first delivery failed (the durable outbox).

A suspended run has no process that could notice its approval expiring, and Prefect's own pause
timeout would just fail the run. So `runbook serve` (or `runbook sweep`, next to workers) looks
every few seconds for expired approvals of suspended runs and resumes each with the sweeper's
answer; the run reruns, records the timeout, pages and completes "not approved". Prefect's state
machine arbitrates a race with a late operator: only one resume of a pause is accepted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound

from flows.approval import TIMEOUT_APPROVER
from flows.notifications import flush_outbox, page
from runbook import approvals, opsdb

log = logging.getLogger("runbook.approvals")


def timeout_answer(action: str, target: str) -> dict[str, Any]:
    """Only fields every approval form has (Prefect refuses unknown ones)."""
    return {
        "approve": False,
        "approver": TIMEOUT_APPROVER,
        "reason": f"nobody approved {action} on {target} before the approval expired",
    }


async def sweep_once() -> list[str]:
    """Resume every expired suspended approval with the timeout answer; returns those runs."""
    async with await opsdb.connect() as conn:
        rows = await approvals.expired_suspended(conn)
        swept: list[str] = []
        async with get_client() as client:
            for run_id, pause_key, action, target in rows:
                await approvals.mark_swept(conn, run_id, pause_key)
                try:
                    run = await client.read_flow_run(UUID(run_id))
                except ObjectNotFound:
                    run = None
                state = run.state if run else None
                if state is not None and state.is_paused():
                    if state.state_details.pause_key not in (None, pause_key):
                        continue  # waiting at another approval point: not this one's business
                    answer = await client.resume_flow_run(
                        UUID(run_id), run_input=timeout_answer(action, target)
                    )
                    if answer.status == SetStateStatus.ACCEPT:
                        log.warning("approval of %s on %s expired: run %s", action, target, run_id)
                        swept.append(run_id)
                    else:  # an operator's answer got there first, or Prefect refused ours
                        log.info("run %s not resumed by the sweeper: %s", run_id, answer.details)
                elif state is None or state.is_final():
                    # the run ended while waiting (cancelled, deleted, or failed by Prefect's
                    # own pause timeout because nothing swept in time): nobody acted, tell one
                    why = f"the run ended while waiting ({state.name if state else 'gone'})"
                    incident = await approvals.end_unanswered(conn, run_id, pause_key, why)
                    if incident is not None:
                        await page(
                            f"Approval for {action} on {target} never answered: {why}",
                            {"incident": incident, "flow_run": run_id},
                        )
    return swept


async def run_sweeper(interval_s: float) -> None:
    """Sweep forever, and retry undelivered notifications (the outbox); a failed sweep
    (database or Prefect unreachable) is retried next time."""
    while True:
        try:
            await sweep_once()
        except Exception as exc:
            log.warning("approval sweep failed (retrying): %s: %s", type(exc).__name__, exc)
        try:
            await flush_outbox()
        except Exception as exc:
            log.warning("notification outbox flush failed: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)
