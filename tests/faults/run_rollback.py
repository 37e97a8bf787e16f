"""The `rollback` flow (Deployment Procedures) run directly in this process, for the fault suite:

    python -m tests.faults.run_rollback INCIDENT

The test SIGKILLs this process at a chosen step (RUNBOOK_TEST_PAUSE_AT, a wire fault, or the
timeline), then drives the product's recovery.
"""

from __future__ import annotations

import asyncio
import sys

from flows.deployment import rollback

VERIFY_WINDOW_S = 30.0

if __name__ == "__main__":
    result = asyncio.run(rollback(incident_id=sys.argv[1], verify_window_s=VERIFY_WINDOW_S))
    print(result.model_dump_json())
