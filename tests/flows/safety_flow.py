"""A minimal flow that rolls back a bad Railway deployment through the safety core.

Used by the safety-core tests (and runnable as a script for the kill -9 test):
    python -m tests.flows.safety_flow INCIDENT [--slow-response]
    python -m tests.flows.safety_flow --serve   # a deployment + the approval sweeper,
                                                      # what `runbook serve` does for real flows
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from prefect import flow

from blocks.policy import Policy
from blocks.railway import Railway
from flows.approval import request_approval
from flows.notifications import page
from runbook import timeline
from runbook.actions import ActionRequest
from runbook.errors import OutcomeUnknown, TransientError
from runbook.safety import perform
from tasks.railway import get_deployments, last_known_good, rollback_deployment


@flow(name="safety-rollback")
async def safety_rollback(
    incident_id: str,
    dry_run: bool = False,
    target_suffix: str = "",
    two_person: bool = False,
    symptom_gone_after_approval: bool = False,
    lose_first_response: bool = False,
    slow_response_s: float = 0.0,
    requested_by: str | None = None,
    break_glass: bool = False,
) -> dict[str, Any]:
    """Roll back the live deployment to the last known good one, safely."""
    policy, railway = await Policy.resolve(), await Railway.resolve()
    deployments = await get_deployments(railway)
    bad_id = deployments.current_id
    assert bad_id is not None
    good = last_known_good(deployments.items, bad_id)
    assert good is not None, "no deployment to roll back to"
    request = ActionRequest(
        incident_id=incident_id,
        action="rollback_deployment",
        target=f"railway:{railway.service_id}{target_suffix}",
        params={"deployment_id": good.id},
        reason=f"error rate above 5 % since deployment {bad_id}",
        evidence={"error_rate_pct": 12.5, "bad_deployment": bad_id},
        two_person=two_person,
        requested_by=requested_by,
        break_glass=break_glass,
    )
    attempts = {"n": 0}

    async def act() -> dict[str, Any]:
        applied = await rollback_deployment(railway, good.id)
        attempts["n"] += 1
        if slow_response_s:
            await asyncio.sleep(slow_response_s)  # the window in which the test kills us
        if lose_first_response and attempts["n"] == 1:
            raise OutcomeUnknown("railway: timed out")  # acted, but we never heard back
        return applied.model_dump()

    async def reconcile(recorded: dict[str, Any]) -> bool:
        """Did a rollback to the recorded deployment already happen? (live commit matches)"""
        now = await get_deployments(railway)
        by_id = {d.id: d for d in now.items}
        wanted, live = by_id.get(recorded["deployment_id"]), by_id.get(now.current_id or "")
        return wanted is not None and live is not None and live.commit == wanted.commit

    async def still_needed() -> bool:
        return not symptom_gone_after_approval

    async def attempt() -> dict[str, Any]:
        outcome = await perform(
            request,
            policy=policy,
            act=act,
            dry_run=dry_run,
            approve=request_approval,
            page=page,
            reconcile=reconcile,
            still_needed=still_needed,
        )
        return outcome.model_dump()

    try:
        result = await attempt()
    except TransientError:
        result = await attempt()  # what a task/flow retry does: the ledger decides
    await timeline.publish(incident_id, "Safety rollback")
    return result


async def serve_with_sweeper() -> None:
    from prefect.flows import aserve

    from flows.approval_sweeper import run_sweeper

    sweeping = "--no-sweeper" not in sys.argv  # else `runbook sweep` has to do it
    sweeper = asyncio.create_task(run_sweeper(1.0)) if sweeping else None
    await aserve(await safety_rollback.ato_deployment(name="test"))
    if sweeper is not None:
        sweeper.cancel()


if __name__ == "__main__" and sys.argv[1] == "--serve":
    asyncio.run(serve_with_sweeper())
elif __name__ == "__main__":
    incident = sys.argv[1]
    slow = 30.0 if "--slow-response" in sys.argv else 0.0
    print(asyncio.run(safety_rollback(incident, slow_response_s=slow)))
