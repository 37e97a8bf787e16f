"""`runbook demo --auto-approve` end to end: every scenario as expected, nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from runbook.cli.demo import SCENARIOS

pytestmark = pytest.mark.e2e


def survivors(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("RUNBOOK_DEMO_TEST_MARK") == marker:
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_demo_auto_approve_summary_and_no_process_survives() -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, "RUNBOOK_DEMO_TEST_MARK": marker, "PREFECT_API_URL": "", "COLUMNS": "200"}
    env.pop("RUNBOOK_OPS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "demo", "--auto-approve", "--fault-wait", "14"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "Demo summary" in out
    for scenario in SCENARIOS:
        assert scenario.name in out
    assert out.count("as expected") == len(SCENARIOS)
    assert "oncall" in out, "the rollback shows its approver"
    assert "Traceback" not in result.stderr
    deadline = time.monotonic() + 10
    while survivors(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert survivors(marker) == [], "the demo left processes running"
