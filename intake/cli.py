"""`runbook intake [--host --port]`: uvicorn serving the intake app, dispatcher in-process."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TYPE_CHECKING

from runbook.errors import ConfigurationError

if TYPE_CHECKING:
    from intake.routes import RoutingTable
    from intake.settings import IntakeSettings


def run(host: str, port: int) -> None:
    """Serve until interrupted. The dispatcher runs as a background task of the same process
    and, at start-up, picks up every incident a previous process left undispatched."""
    import uvicorn

    from intake.app import create_app
    from intake.settings import IntakeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = IntakeSettings()
        app = create_app(settings, table=_routing_table(settings))
    except ConfigurationError as exc:  # e.g. a route to an unknown flow: one line, exit 1
        raise SystemExit(f"error: {exc}") from None
    # Everything imported so far (Prefect, pydantic, the app) lives as long as the process: keep
    # it out of the collector's scans, and collect the young generation less often. Measured
    # (bench/intake_bench.py): the worst ack under a storm drops from ~85 ms to ~18 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=settings.intake_http,
        loop=settings.intake_loop,
        timeout_graceful_shutdown=10,
    )


def _routing_table(settings: IntakeSettings) -> RoutingTable:
    """The file's table, overridden by the `IntakeRoutes` block when one is named — loaded and
    checked here, before serving, so a bad table stops the command with one line."""
    from intake.routes import load_table

    table = load_table(settings.intake_routes_file)
    if settings.intake_routes_block:
        from intake.routes_block import load_block_table

        quiet = logging.getLogger("httpx")  # no request lines before the verdict
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            table = asyncio.run(load_block_table(settings.intake_routes_block, table))
        finally:
            quiet.setLevel(level)
    return table
