"""Helpers of the Security Procedures tests: the store's side of its keys, the platform's
variables, and a grep of everywhere a secret must never show up."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.input import keyset_from_paused_state
from prefect.logging.handlers import APILogWorker

from runbook.settings import get_settings
from sandbox.handle import SandboxHandle

KEY = re.compile(r"sk_store_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def security_env(platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> SandboxHandle:
    """Short grace, and room in the destructive budget (the same targets many times an hour)."""
    monkeypatch.setenv("RUNBOOK_STORE_KEY_GRACE_S", "2")
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "100")
    get_settings.cache_clear()
    return platform_env


def manual_incident() -> str:
    return f"manual-{uuid.uuid4().hex[:12]}"


def client_key(sb: SandboxHandle, store: str) -> str:
    """A key the store's client holds (the sandbox hands the store one of its own)."""
    answer = httpx.post(f"{sb.control_url}/store-keys", json={"store_id": store}, timeout=10)
    answer.raise_for_status()
    key: str = answer.json()["key"]
    return key


def store_status(sb: SandboxHandle, key: str) -> int:
    """What the support API answers the store's client calling with `key`."""
    url = f"{sb.env['RUNBOOK_API_URL']}/v1/store"
    return httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def mails_to(sb: SandboxHandle, address: str) -> list[dict[str, Any]]:
    return [m for m in sb.sink("email") if address in m["to"]]


async def delivered_key(sb: SandboxHandle, store: str, before: int, timeout: float = 30) -> str:
    """The key the store's contact received (the newest mail after the first `before`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = mails_to(sb, f"owner@{store}.example.com")[before:]
        for mail in reversed(mails):
            if found := KEY.search(mail["body"]):
                return found.group(0)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no key delivered to {store}'s contact")


def app_db(sb: SandboxHandle) -> psycopg.Connection[Any]:
    return psycopg.connect(sb.env["RUNBOOK_APP_DATABASE_URL"], autocommit=True)


def railway_variables(sb: SandboxHandle) -> dict[str, str]:
    """The service's variables as Railway holds them (the test reads the new key here)."""
    env = sb.env
    answer = httpx.post(
        env["RUNBOOK_RAILWAY_ENDPOINT"],
        headers={"Authorization": f"Bearer {env['RUNBOOK_RAILWAY_TOKEN']}"},
        json={
            "query": "query($p: String!, $e: String!, $s: String) {"
            " variables(projectId: $p, environmentId: $e, serviceId: $s) }",
            "variables": {
                "p": env["RUNBOOK_RAILWAY_PROJECT_ID"],
                "e": env["RUNBOOK_RAILWAY_ENVIRONMENT_ID"],
                "s": env["RUNBOOK_RAILWAY_SERVICE_ID"],
            },
        },
        timeout=10,
    )
    variables: dict[str, str] = answer.json()["data"]["variables"]
    return variables


def ops(sb: SandboxHandle, operation: str) -> list[dict[str, Any]]:
    return [e for e in sb.journal() if e["operation"] == operation]


async def form_description(gate: str) -> str:
    """What the Prefect UI's Resume form shows above the fields."""
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(gate))
        assert run.state is not None
        key = keyset_from_paused_state(run.state)["description"]
        text: str = await client.read_flow_run_input(uuid.UUID(gate), key)
        return text


async def artifact(key: str) -> str:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return str(found[-1].data)


async def _ops_database(pg_url: str) -> str:
    """Every row of our own database (ledger, timeline, approvals, notification outbox)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'runbook'"
        )
        tables = [str(r[0]) for r in await cur.fetchall()]
        text = []
        for table in tables:
            rows = await conn.execute(f'SELECT t::text FROM runbook."{table}" t')
            text += [str(r[0]) for r in await rows.fetchall()]
    return "\n".join(text)


async def _all(read: Callable[[int], Awaitable[list[Any]]]) -> list[Any]:
    """Every page of a Prefect read (the server answers 200 at most per call)."""
    found: list[Any] = []
    while True:
        page = await read(len(found))
        found += page
        if len(page) < 200:
            return found


async def everywhere(sb: SandboxHandle, pg_url: str, console: str) -> dict[str, str]:
    """Logs, artifacts, flow-run parameters and state messages (exceptions), every notification
    channel, our own database and the console: where no secret may appear."""
    APILogWorker.drain_all(timeout=10)
    async with get_client() as client:
        logs = await _all(lambda offset: client.read_logs(limit=200, offset=offset))
        artifacts = await _all(lambda offset: client.read_artifacts(limit=200, offset=offset))
        runs = await _all(lambda offset: client.read_flow_runs(limit=200, offset=offset))
    return {
        "logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([a.data for a in artifacts], default=str),
        "parameters": json.dumps([r.parameters for r in runs], default=str),
        "exceptions": "\n".join(str(r.state.message) for r in runs if r.state),
        "slack": json.dumps(sb.sink("slack"), default=str),
        "pagerduty": json.dumps(sb.sink("pagerduty"), default=str),
        "email": json.dumps(sb.sink("email"), default=str),
        "journal": json.dumps(sb.journal(), default=str),
        "ops database": await _ops_database(pg_url),
        "console": console,
    }
