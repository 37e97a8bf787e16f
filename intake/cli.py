"""`runbook intake [--host --port]`: uvicorn serving the intake app, dispatcher in-process."""

from __future__ import annotations

import gc
import logging

from runbook.errors import ConfigurationError


def run(host: str, port: int) -> None:
    """Serve until interrupted. The dispatcher runs as a background task of the same process
    and, at start-up, picks up every incident a previous process left undispatched."""
    import uvicorn

    from intake.app import create_app
    from intake.settings import IntakeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = IntakeSettings()
        app = create_app(settings)
    except ConfigurationError as exc:
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
