"""`runbook serve`: every runbook flow as a deployment named "runbook", served by this process.

The same deployments `prefect.yaml` declares for work pools; this is the no-infrastructure way
(demo, a single VM). Schedules (UTC): health-check every 5 min (the key-metrics watch) and
llm-provider every 5 min (so the platform never stays on the fallback model), high-latency every
10 min (replicas it added go back down after the Policy cool-down).
Stopping `serve` pauses its deployments (Prefect's behaviour): restart it to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prefect.flows import aserve

from flows.registry import FLOWS, load_flow
from runbook.settings import get_settings

SCHEDULES: dict[str, str] = {
    "health-check": "*/5 * * * *",
    "llm-provider": "*/5 * * * *",
    "high-latency": "*/10 * * * *",
}


async def build_deployments(with_schedules: bool = True) -> list[Any]:
    name = get_settings().deployment_name
    deployments = []
    for flow_name in FLOWS:
        cron = SCHEDULES.get(flow_name) if with_schedules else None
        flow_obj = load_flow(flow_name)
        deployments.append(
            await flow_obj.ato_deployment(
                name=name, cron=cron, tags=["runbook"], description=flow_obj.description
            )
        )
    return deployments


async def serve(with_schedules: bool = True) -> None:
    """Register the deployments and execute their runs until interrupted; meanwhile the
    approval sweeper times out approvals of suspended runs that nobody answered."""
    from flows.approval_sweeper import run_sweeper

    sweeper = asyncio.create_task(run_sweeper(get_settings().approval_sweep_s))
    try:
        await aserve(*await build_deployments(with_schedules), print_starting_message=True)
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
