"""The approval sweeper: answers "timed out" for suspended runs nobody approved in time, and
retries notifications whose first delivery failed (the durable outbox).

A suspended run has no process that could notice its approval expiring, and Prefect's own pause
timeout would just fail the run. So `runbook serve` (or `runbook sweep`, next to workers) looks
every few seconds for expired approvals of suspended runs and resumes each with the sweeper's
answer; the run reruns, records the timeout, pages and completes "not approved". Prefect's state
machine arbitrates a race with a late operator: only one resume of a pause is accepted.

It also recovers **lost runs** (`recover_lost_runs`, every sweep): a runbook flow run whose
process was killed (SIGKILL, OOM, its machine or `runbook serve` gone) while it had an act in
flight or unverified. Prefect shows such a run Running for ever (nothing is left to report it),
or Crashed (the serving process saw its child die). A run is lost when Prefect says Crashed, or
says Running for over `LOST_GRACE_S` while its lease (flows/incident.py `RunLease`) is free.
For each: its `started` acts are reconciled by reading the platform (`done` when it shows them;
else they stay `started`: the outcome is unknown, never re-sent), an act not begun is closed
(`failed`: the run was lost before acting; a rerun asks again), a human is paged and the
timeline says `escalated` — the incident never stays "running"; a Running run is set Crashed.
Nothing is re-sent: a rerun (`runbook run …`) finds the ledger and acts at most once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from flows.acts import reconcile_recorded
from flows.approval import TIMEOUT_APPROVER
from flows.notifications import flush_outbox, page
from flows.registry import FLOWS
from runbook import approvals, ledger, opsdb

log = logging.getLogger("runbook.approvals")


def timeout_answer(action: str, target: str) -> dict[str, Any]:
    """Only fields every approval form has (Prefect refuses unknown ones)."""
    return {
        "approve": False,
        "approver": TIMEOUT_APPROVER,
        "reason": f"nobody approved {action} on {target} before the approval expired",
    }


SWEEP_CONCURRENCY = 8  # resumes in flight at once: one slow answer never holds up the rest
RESUME_TIMEOUT_S = 20.0  # a resume Prefect does not answer in time is retried by a later sweep


async def _resume_expired(
    client: Any, run_id: str, pause_key: str, action: str, target: str
) -> tuple[str, str | None]:
    """Resume one expired wait with the timeout answer: ("swept" | "other" | "ended", state)."""
    try:
        run = await client.read_flow_run(UUID(run_id))
    except ObjectNotFound:
        run = None
    state = run.state if run else None
    if state is not None and state.is_paused():
        if state.state_details.pause_key not in (None, pause_key):
            return "other", None  # waiting at another approval point: not this one's business
        answer = await client.resume_flow_run(
            UUID(run_id), run_input=timeout_answer(action, target)
        )
        if answer.status == SetStateStatus.ACCEPT:
            log.warning("approval of %s on %s expired: run %s", action, target, run_id)
            return "swept", None
        # an operator's answer got there first, or Prefect refused ours
        log.info("run %s not resumed by the sweeper: %s", run_id, answer.details)
        return "other", None
    if state is None or state.is_final():
        return "ended", state.name if state else "gone"
    return "other", None


async def sweep_once() -> list[str]:
    """Resume every expired suspended approval with the timeout answer (several at once, each
    bounded in time); returns those runs."""
    async with await opsdb.connect() as conn:
        rows = await approvals.expired_suspended(conn)
        for run_id, pause_key, _action, _target in rows:
            await approvals.mark_swept(conn, run_id, pause_key)
        swept: list[str] = []
        limit = asyncio.Semaphore(SWEEP_CONCURRENCY)
        async with get_client() as client:

            async def one(row: tuple[str, str, str, str]) -> tuple[str, str | None]:
                async with limit:
                    try:
                        return await asyncio.wait_for(
                            _resume_expired(client, *row), RESUME_TIMEOUT_S
                        )
                    except Exception as exc:  # this row is retried by a sweep 30 s later
                        log.warning(
                            "sweeping run %s failed (retried later): %s: %s",
                            row[0],
                            type(exc).__name__,
                            exc,
                        )
                        return "error", None

            results = await asyncio.gather(*(one(row) for row in rows))
        for (run_id, pause_key, action, target), (outcome, ended) in zip(
            rows, results, strict=True
        ):
            if outcome == "swept":
                swept.append(run_id)
            elif outcome == "ended":
                # the run ended while waiting (cancelled, deleted, or failed by Prefect's own
                # pause timeout because nothing swept in time): nobody acted, tell one
                why = f"the run ended while waiting ({ended})"
                incident = await approvals.end_unanswered(conn, run_id, pause_key, why)
                if incident is not None:
                    await page(
                        f"Approval for {action} on {target} never answered: {why}",
                        {"incident": incident, "flow_run": run_id},
                    )
    try:
        await recover_lost_runs()
    except Exception as exc:  # the approvals above were answered: report them regardless
        log.warning("lost-run recovery failed (retrying): %s: %s", type(exc).__name__, exc)
    return swept


# a run Prefect shows Running with a free lease this long after it began running has lost its
# process (the lease is taken as the flow starts; the grace covers a run starting right now)
LOST_GRACE_S = 30.0
# runs judged for good (not a runbook flow, ended other than Crashed, or recovered): never read
# from Prefect again by this process — each sweep reads only the runs still in question
_SETTLED: set[str] = set()


async def recover_lost_runs() -> list[str]:
    """Find runbook runs that lost their process mid-incident, reconcile their acts, escalate;
    returns those runs (see the module docstring)."""
    lost: list[str] = []
    async with await opsdb.connect() as conn, get_client() as client:
        names: dict[UUID, str] = {}
        if len(_SETTLED) > 10_000:
            _SETTLED.clear()
        for run_id, incident in await ledger.unfinished_runs(conn, sorted(_SETTLED)):
            try:
                run = await client.read_flow_run(UUID(run_id))
            except (ObjectNotFound, ValueError):
                _SETTLED.add(run_id)
                continue
            if run.flow_id not in names:
                names[run.flow_id] = (await client.read_flow(run.flow_id)).name
            if names[run.flow_id] not in FLOWS or run.state is None:
                _SETTLED.add(run_id)  # not a runbook flow (it holds no lease): not ours to judge
                continue
            state = run.state
            if state.is_final() and state.type is not StateType.CRASHED:
                _SETTLED.add(run_id)  # it ended and said so (its hooks paged a failure)
                continue
            if state.type is StateType.RUNNING:
                began = state.timestamp or datetime.now(UTC)
                if (datetime.now(UTC) - began).total_seconds() < LOST_GRACE_S:
                    continue
                if await ledger.run_alive(conn, run_id):
                    continue
            elif state.type is not StateType.CRASHED:
                continue
            await _recover(conn, run_id, incident, names[run.flow_id], state.name or "?")
            if state.type is StateType.RUNNING:
                await client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message="the run's process was lost (no lease); recovered by the"
                        " runbook sweeper"
                    ),
                    force=True,
                )
            _SETTLED.add(run_id)
            lost.append(run_id)
    return lost


async def _recover(conn: ledger.Conn, run_id: str, incident: str, flow: str, seen: str) -> None:
    """Reconcile the lost run's acts with the platform, then page and note it (once per run)."""
    told: list[str] = []
    for entry in await ledger.of_run(conn, run_id):
        what = f"{entry.action} on {entry.target}"
        if entry.status == "started":
            happened = await reconcile_recorded(entry.action, entry.target, entry.params)
            if happened:
                await ledger.mark(conn, entry.idempotency_key, "done", outcome={"reconciled": True})
                await ledger.event(
                    conn,
                    entry.incident_id,
                    "done",
                    f"{what}: the lost run had acted (found on the platform); not repeated",
                    key=entry.idempotency_key,
                )
                told.append(f"{what} DONE (found on the platform), not verified")
            else:
                told.append(f"{what} OUTCOME UNKNOWN (not on the platform), not repeated")
        elif entry.status in {"intent", "approved"}:
            why = "the run's process was lost before acting: nothing was sent"
            await ledger.mark(conn, entry.idempotency_key, "failed", outcome={"error": why})
            await ledger.event(conn, entry.incident_id, "failed", why, key=entry.idempotency_key)
            told.append(f"{what} NOT done (nothing was sent)")
        elif entry.status == "done" and entry.verified is None:
            told.append(f"{what} done, NOT verified")
        else:
            told.append(f"{what} {entry.status}")
    summary = (
        f"Lost run: {flow} {run_id} lost its process ({seen}) before finishing incident"
        f" {incident}:"
        f" {'; '.join(told) or 'no act'}. Check the platform; rerun the flow to verify"
        " (a rerun never repeats a done act)."
    )
    log.error("%s", summary)
    paged = await page(summary, {"key": f"run-lost:{run_id}", "incident": incident})
    await ledger.event(
        conn,
        incident,
        "escalated",
        summary + ("" if paged else " (page NOT accepted)"),
        detail={"lost_run": run_id},
    )


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
