"""`runbook sandbox …` as an operator runs it, with no Postgres/Redis where it is told to look:
the sandbox falls back to embedded servers and stops them again on `down`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.local.embedded import reachable

pytestmark = pytest.mark.integration
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def closed_port(port: int) -> int:
    """A privileged port nothing listens on (an ephemeral one could be handed to the sandbox)."""
    assert not reachable("127.0.0.1", port)
    return port


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, "sandbox", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_sandbox_up_falls_back_to_embedded_stores_and_cli_round_trip(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RUNBOOK_HOME": str(tmp_path / "home"),
        "RUNBOOK_SANDBOX_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port(1)}/postgres",
        "RUNBOOK_SANDBOX_REDIS_URL": f"redis://127.0.0.1:{closed_port(9)}/0",
    }
    up = run("up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        exports = {k: shlex.split(v)[0] for k, v in exports.items()}
        assert "RUNBOOK_APP_DATABASE_URL" in exports and "RUNBOOK_SANDBOX_CONTROL_URL" in exports
        ready = httpx.get(f"{exports['RUNBOOK_API_URL']}/health/ready", timeout=10)
        assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}

        status = run("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        stores = json.loads(status.stdout)["stores"]
        assert sorted(stores["embedded"]) == ["postgres", "redis"]

        bad = run("inject", "meteor-strike", env=env)
        assert bad.returncode == 64
        assert bad.stderr.count("\n") == 1 and "unknown fault" in bad.stderr
        assert "Traceback" not in bad.stderr
        assert run("inject", "complete-outage", env=env).returncode == 0
        assert httpx.get(f"{exports['RUNBOOK_API_URL']}/health", timeout=10).status_code == 503
        assert run("clear", env=env).returncode == 0
        assert httpx.get(f"{exports['RUNBOOK_API_URL']}/health", timeout=10).status_code == 200
        embedded_pg = stores["postgres"]
    finally:
        down = run("down", env=env)
    assert down.returncode == 0, down.stderr
    host, port = embedded_pg.split(":")
    assert not reachable(host, int(port)), "the embedded Postgres stops with the sandbox"
    after = run("status", env=env)
    assert after.returncode == 1 and "not running" in after.stderr
