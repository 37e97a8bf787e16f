"""A flow for tests/flows/test_warm_start.py: reports how its process started."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from prefect import flow


@flow(name="warm-probe")
async def warm_probe(out: str, crash: bool = False) -> str:
    Path(out).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                # imported by the fork server, never by this module
                "preloaded": "flows.high_latency" in sys.modules,
                "api": os.environ.get("PREFECT_API_URL"),
            }
        )
    )
    if crash:
        os.kill(os.getpid(), signal.SIGKILL)
    return "ok"
