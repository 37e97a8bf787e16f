"""Verbs that need a Prefect server say so in one line when none is configured — they never
start a temporary server (pages of "database is locked" and a confusing error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "args",
    [
        ["run", "health-check"],
        ["approve", "abc", "--approver", "alice", "--reason", "x"],
        ["reject", "abc", "--reason", "x"],
    ],
)
def test_a_verb_that_needs_prefect_refuses_in_one_line_without_one(
    args: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RUNBOOK_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["RUNBOOK_HOME"] = str(tmp_path / "demo")
    result = subprocess.run(
        [sys.executable, "-m", "runbook.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 64, result.stdout + result.stderr
    assert "needs a Prefect server and PREFECT_API_URL is not set" in result.stderr
    assert f"{tmp_path / 'demo'}/demo.env" in result.stderr, "points at the demo's environment"
    assert "Traceback" not in result.stderr and "database is locked" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "prefect").exists() or not any((tmp_path / "prefect").rglob("*.db"))


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_demo_list_names_each_scenario_and_the_runbook_section_it_plays() -> None:
    from runbook.cli.demo import SCENARIOS

    result = _demo("--list")
    assert result.returncode == 0, result.stderr
    for s in SCENARIOS:
        assert s.section, f"demo scenario {s.name} names no runbook section"
        line = next((x for x in result.stdout.splitlines() if f" {s.name} " in x), "")
        assert s.section.split(" (")[0] in line and s.flow in line, (s.name, result.stdout)


def test_demo_with_an_unknown_scenario_says_which_exist_before_starting_anything() -> None:
    result = _demo("--scenario", "high-load", "--scenario", "no-such-fault")
    assert result.returncode == 64, result.stdout + result.stderr
    assert "unknown scenario 'no-such-fault'" in result.stderr
    assert "bad-deploy" in result.stderr and "Traceback" not in result.stderr
    assert "Prefect UI" not in result.stdout, "nothing was started"


def test_demo_scenarios_repeatable_keep_the_demo_order() -> None:
    from runbook.cli.demo import choose

    assert [s.name for s in choose(["llm-outage", "bad-deploy"])] == ["bad-deploy", "llm-outage"]
    assert len(choose(None)) == len(choose([])) > 1
