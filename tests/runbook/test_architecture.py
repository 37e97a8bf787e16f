"""The house drawn from imports (docs/architecture.md) is enforced, and the console refuses a
top-level package that is not this project's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runbook", "flows", "tasks", "blocks", "intake", "sandbox")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_import_contracts_hold_on_this_tree(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("runbook/timeline.py", "import flows.health", "The core (runbook"),
        ("intake/metrics.py", "import sandbox.handle", "Production code never imports"),
        ("sandbox/platform.py", "import runbook.settings", "The sandbox imports nothing"),
        ("blocks/slack.py", "import tasks.notify", "Layers"),
    ],
)
def test_a_deliberately_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    tree = copy_tree(tmp_path)
    with (tree / module).open("a") as handle:
        handle.write(f"\n{bad_import}  # noqa: E402, F401\n")
    result = lint(tree)
    assert result.returncode != 0
    broken = [
        line for line in result.stdout.splitlines() if line.endswith("BROKEN") or "BROKEN (" in line
    ]
    assert any(line.startswith(contract) for line in broken), result.stdout[-3000:]


def test_the_console_refuses_a_top_level_package_of_another_distribution(tmp_path: Path) -> None:
    fake = tmp_path / "flows"
    fake.mkdir()
    (fake / "__init__.py").write_text('"""Some other project\'s flows."""\n')
    result = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 64
    assert "'flows'" in result.stderr and "not this project's" in result.stderr
    assert "Traceback" not in result.stderr
