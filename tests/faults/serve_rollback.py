"""What `runbook serve` does, for the `rollback` flow only (no schedules): its deployment
("rollback/runbook") served from this process, and the approval sweeper (which also recovers
lost runs) every second. The fault suite SIGKILLs this process and its flow run's process, then
starts it again:

    python -m tests.faults.serve_rollback
"""

from __future__ import annotations

import asyncio
import contextlib

from prefect.flows import aserve

from flows.approval_sweeper import run_sweeper
from flows.serve import build_deployments


async def main() -> None:
    sweeper = asyncio.create_task(run_sweeper(1.0))
    try:
        await aserve(*await build_deployments(with_schedules=False, only={"rollback"}))
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


if __name__ == "__main__":
    asyncio.run(main())
