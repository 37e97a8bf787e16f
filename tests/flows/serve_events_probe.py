"""A runner like `runbook serve`'s, for one flow (warm-probe), polling Prefect only every
`RUNBOOK_SERVE_POLL_S` seconds, with the event-driven pickup of flows/serve.py beside it unless
`--no-events`:

    python -m tests.flows.serve_events_probe NAME [--no-events]

serves the deployment "warm-probe/NAME".
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from prefect.runner import Runner

from flows import warm_start
from flows.serve import pick_up_on_events
from runbook.settings import get_settings
from tests.flows.warm_probe import warm_probe


async def main(name: str, events: bool) -> None:
    warm_start.install()
    runner = Runner(name=name, query_seconds=get_settings().serve_poll_s)
    await runner.aadd_flow(warm_probe, name=name)
    pickup = asyncio.create_task(pick_up_on_events(runner)) if events else None
    try:
        await runner.start()
    finally:
        if pickup is not None:
            pickup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pickup


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], events="--no-events" not in sys.argv))
