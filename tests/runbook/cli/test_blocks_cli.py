"""`runbook blocks register` / `configure --from-env` against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from blocks import ALL_BLOCKS, Contacts, CustomerStatusPage, Railway, Slack
from runbook.settings import Settings, get_settings

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


def test_configure_from_env_saves_contacts_and_status_page_that_load_back_equal(
    prefect_server: str,
) -> None:
    key = "sp-cli-test-Vb72nQ"
    components = '{"API": "cmp-api", "Widget": "cmp-widget"}'
    env = {
        "PREFECT_API_URL": f"{prefect_server}/api",
        "RUNBOOK_EMAIL_TO": "oncall@corp.test",
        "RUNBOOK_STATUSPAGE_URL": "https://sp.test/v1",
        "RUNBOOK_STATUSPAGE_API_KEY": key,
        "RUNBOOK_STATUSPAGE_PAGE_ID": "pg-cli",
        "RUNBOOK_STATUSPAGE_COMPONENTS": components,
    }
    configured = cli("configure", "--from-env", "--name", "contacts-rt", env=env)
    assert configured.returncode == 0, configured.stderr
    assert "runbook-contacts/contacts-rt" in configured.stdout
    assert key not in configured.stdout + configured.stderr

    import asyncio

    contacts, page = asyncio.run(_load("contacts-rt"))
    expected = Contacts.from_settings(Settings(email_to="oncall@corp.test"))
    assert contacts.contacts == expected.contacts
    assert contacts.alert_channels == expected.alert_channels
    email = contacts.channel("email")
    assert email is not None and email.address == "oncall@corp.test"
    assert contacts.contact_for("Railway Support").address == "https://discord.gg/railway"
    assert (page.url, page.page_id) == ("https://sp.test/v1", "pg-cli")
    assert page.components == {"API": "cmp-api", "Widget": "cmp-widget"}
    assert page.api_key.get_secret_value() == key


async def _load(name: str) -> tuple[Contacts, CustomerStatusPage]:
    return await Contacts.aload(name), await CustomerStatusPage.aload(name)


def test_blocks_commands_without_a_prefect_api_say_so(tmp_path: object) -> None:
    result = cli("configure", "--from-env", env={"PREFECT_API_URL": ""})
    assert result.returncode == 64
    assert "PREFECT_API_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
