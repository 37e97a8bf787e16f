"""`runbook demo --list` and `--scenario` checks: fast, nothing is started (no stack, no
Prefect) — what an operator sees before a game day."""

from __future__ import annotations

import os
import subprocess
import sys

from runbook.cli.demo import SCENARIOS


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "220"},
    )


def test_list_names_every_scenario_with_its_section_flow_and_approvers() -> None:
    result = demo("--list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    for s in SCENARIOS:
        line = next((x for x in lines if f" {s.name} " in x), "")
        assert line, f"{s.name} is not listed:\n{result.stdout}"
        assert s.section and s.section in line, (s.name, line)
        assert s.flow in line, (s.name, line)
        approvers = line.rstrip(" │").rsplit("│", 1)[-1].strip()
        assert approvers == {0: "-", 1: "1"}.get(s.approvers, f"{s.approvers} (distinct)"), line
    names = [s.name for s in SCENARIOS]
    assert len(set(names)) == len(names), "scenario names are unique"
    sections = {s.section for s in SCENARIOS}
    for heading in (
        "§1 High Error Rate",
        "§2 High Latency",
        "§3 LLM Provider Issues",
        "§4 Database Connection Issues",
        "§5 Complete Outage",
        "Deployment Procedures",
        "Scaling Procedures",
        "Rotate API Keys",
        "Security Incident Response",
        "Maintenance Windows",
    ):
        assert any(heading in x for x in sections), f"no scenario plays {heading}"


def test_two_person_acts_are_the_outage_rollback_and_the_rds_resize() -> None:
    two = {s.name for s in SCENARIOS if s.approvers == 2}
    assert two == {"complete-outage", "rds-resize"}


def test_an_unknown_scenario_fails_in_one_line_naming_the_known_ones() -> None:
    result = demo("--scenario", "maintenance", "--scenario", "no-such-scenario")
    assert result.returncode == 64, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown scenario 'no-such-scenario'" in lines[0]
    for s in SCENARIOS:
        assert s.name in lines[0], (s.name, lines[0])
    assert "Traceback" not in result.stderr
    assert "Prefect UI" not in result.stdout and "starting" not in result.stdout, "nothing started"
