"""`runbook blocks register` / `configure --from-env` against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from blocks import ALL_BLOCKS, Railway, Slack
from runbook.settings import get_settings

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", "blocks", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_blocks_register_and_configure_from_env_then_flows_load_them(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "xoxb-cli-test-Rz81kQ"
    env = {
        "PREFECT_API_URL": f"{prefect_server}/api",
        "RUNBOOK_ENVIRONMENT": "staging",
        "RUNBOOK_RAILWAY_TOKEN": secret,
        "RUNBOOK_RAILWAY_PROJECT_ID": "proj-cli",
        "RUNBOOK_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{secret}",
    }
    registered = cli("register", env=env)
    assert registered.returncode == 0, registered.stderr
    for block in ALL_BLOCKS:
        assert block.get_block_type_slug() in registered.stdout
    configured = cli("configure", "--from-env", env=env)
    assert configured.returncode == 0, configured.stderr
    assert "runbook-railway/staging" in configured.stdout
    assert secret not in configured.stdout + configured.stderr

    # a flow in another environment (no RUNBOOK_* secrets) gets the saved documents
    monkeypatch.setenv("RUNBOOK_ENVIRONMENT", "staging")
    monkeypatch.delenv("RUNBOOK_RAILWAY_TOKEN", raising=False)
    get_settings.cache_clear()
    import asyncio

    railway, slack = asyncio.run(_resolve())
    get_settings.cache_clear()
    assert railway.project_id == "proj-cli"
    assert railway.token == SecretStr(secret)
    assert slack.webhook_url.get_secret_value().endswith(secret)


async def _resolve() -> tuple[Railway, Slack]:
    return await Railway.resolve(), await Slack.resolve()


def test_blocks_commands_without_a_prefect_api_say_so(tmp_path: object) -> None:
    result = cli("configure", "--from-env", env={"PREFECT_API_URL": ""})
    assert result.returncode == 64
    assert "PREFECT_API_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
