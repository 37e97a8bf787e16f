"""`runbook demo` end to end: every scenario as expected with --auto-approve, and Ctrl-C midway —
in both cases nothing the demo started is left running."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import IO

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


def no_survivors(marker: str) -> list[str]:
    """The marked processes still there after a short grace (a child reaps its own)."""
    deadline = time.monotonic() + 10
    while survivors(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    return survivors(marker)


def demo_env(marker: str) -> dict[str, str]:
    """Every process the demo starts inherits the marker; nothing of the caller's Prefect/ops
    database leaks in."""
    env = {**os.environ, "RUNBOOK_DEMO_TEST_MARK": marker, "PREFECT_API_URL": "", "COLUMNS": "200"}
    env.pop("RUNBOOK_OPS_DATABASE_URL", None)
    return env


def test_demo_auto_approve_summary_and_no_process_survives() -> None:
    marker = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "demo", "--auto-approve", "--fault-wait", "14"],
        env=demo_env(marker),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "Demo summary" in out
    summary = out[out.index("Demo summary") :]
    for scenario in SCENARIOS:
        assert f"▶ {scenario.name} " in out and f" {scenario.name} " in summary, scenario.name
    assert summary.count("as expected") == len(SCENARIOS), summary
    assert "oncall" in summary, "the approvals show their approver"
    assert "oncall, lead" in summary, "the two-person acts show two distinct approvers"
    assert "approval 2 of 2" in out and "this one as lead" in out, "a second person is asked"
    assert "Traceback" not in result.stderr
    assert no_survivors(marker) == [], "the demo left processes running"


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_demo_interrupted_midway_leaves_no_process() -> None:
    """Ctrl-C while the second scenario waits for a person's approval (its flow holds a process
    of its own then): a clear message, the summary so far, exit 130, nothing left running —
    Prefect server, sandbox, intake, serve, the operator's `runbook run` and its flow runs."""
    marker = uuid.uuid4().hex
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook.cli",
            "demo",
            "--scenario",
            "high-load",
            "--scenario",
            "key-rotation",
            "--fault-wait",
            "12",
        ],
        env=demo_env(marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None and demo.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(demo.stdout, lines), daemon=True).start()
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(demo.stderr or []), daemon=True).start()
    seen: list[str] = []
    midway = False
    try:
        deadline = time.monotonic() + 600
        while not midway and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            in_second = any(x.startswith("▶ key-rotation") for x in seen)
            midway = in_second and "approval needed" in line
        assert midway, "the second scenario never asked for an approval:\n" + "".join(seen)
        assert survivors(marker), "the marker reaches the demo's processes"
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=180)  # a bound, not a timing assertion: a hung demo fails here
    finally:
        if demo.poll() is None:
            demo.kill()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    out, err = "".join(seen), "".join(errors)
    assert demo.returncode == 130, out[-3000:] + err[-2000:]
    assert "interrupted (Ctrl-C)" in out
    assert "Demo summary" in out and "high-load" in out[out.index("Demo summary") :], (
        "the scenarios played so far are summarised"
    )
    assert "demo stopped" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert no_survivors(marker) == [], "Ctrl-C left processes running"
