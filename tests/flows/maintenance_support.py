"""Helpers of the key-metrics watch and maintenance-window tests: our own intake as a real
process (alerts go through it, authenticated, routed, suppressed), an environment of their own
per test (its incidents, samples and Policy block), the sandbox's journal and sinks."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook.settings import get_settings
from sandbox.handle import SandboxHandle
from tests.intake.intake_harness import (
    DEPLOYMENT,
    SECRETS,
    IntakeProcess,
    Sender,
    register_route_deployments,
)


@pytest.fixture(scope="session")
async def own_intake(
    prefect_server: str,
    sandbox_platform: SandboxHandle,
    pg_url: str,
    session_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[IntakeProcess]:
    """`runbook intake` over HTTP on the test ops database: Slack and PagerDuty are the
    sandbox's; it dispatches to stand-in deployments of the route flows (runs stay scheduled)."""
    api_url = f"{prefect_server}/api"
    await register_route_deployments(api_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env.update(SECRETS)
    sb_env = sandbox_platform.env
    env.update(
        {
            "RUNBOOK_OPS_DATABASE_URL": pg_url,
            "RUNBOOK_SLACK_WEBHOOK_URL": sb_env["RUNBOOK_SLACK_WEBHOOK_URL"],
            "RUNBOOK_PAGERDUTY_EVENTS_URL": sb_env["RUNBOOK_PAGERDUTY_EVENTS_URL"],
            "RUNBOOK_PAGERDUTY_ROUTING_KEY": sb_env["RUNBOOK_PAGERDUTY_ROUTING_KEY"],
            "RUNBOOK_INTAKE_DISPATCH_POLL_S": "0.2",
            "RUNBOOK_DEPLOYMENT_NAME": DEPLOYMENT,
            "PREFECT_HOME": str(session_dir / "prefect-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    proc = IntakeProcess(env, tmp_path_factory.mktemp("own-intake"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def watch_env(
    platform_env: SandboxHandle, own_intake: IntakeProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxHandle]:
    """Our findings go to our own intake; an environment name of this test's own (its
    incidents, its metric samples, its Policy block); room in the destructive budget."""
    monkeypatch.setenv("RUNBOOK_INTAKE_URL", own_intake.url)
    monkeypatch.setenv("RUNBOOK_GENERIC_SECRET", SECRETS["RUNBOOK_GENERIC_SECRET"])
    monkeypatch.setenv("RUNBOOK_ENVIRONMENT", f"mw-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "100")
    get_settings.cache_clear()
    yield platform_env
    get_settings.cache_clear()


def post_alert(intake: IntakeProcess, payload: dict[str, Any]) -> dict[str, Any]:
    """A generic-format alert, signed as our own watch signs it; the intake's answer."""
    path, body, headers = Sender().request("generic", payload)
    answer = httpx.post(f"{intake.url}{path}", content=body, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text
    found: dict[str, Any] = answer.json()
    return found


def sunday(weeks: int, hour: int = 2, minute: int = 0) -> datetime:
    """A Sunday far ahead (each test its own window), at hour:minute UTC."""
    first = datetime(2031, 1, 5, tzinfo=UTC)  # a Sunday
    return first + timedelta(weeks=weeks, hours=hour, minutes=minute)


def railway_and_rds(sb: SandboxHandle, since: int) -> list[str]:
    """What the platform saw after the first `since` journal entries, in order: MM=true,
    MM=false for MAINTENANCE_MODE writes, else the operation's name."""
    seen = []
    for entry in sb.journal()[since:]:
        if entry["system"] not in {"railway", "rds"}:
            continue
        variables = entry["args"].get("variables") or {}
        if "MAINTENANCE_MODE" in variables:
            seen.append(f"MM={variables['MAINTENANCE_MODE']}")
        else:
            seen.append(entry["operation"])
    return seen


def in_maintenance(sb: SandboxHandle) -> bool:
    """What the API tells customers: /health says `maintenance` while it is on."""
    health = httpx.get(f"{sb.env['RUNBOOK_API_URL']}/health", timeout=10).json()
    return bool(health.get("maintenance"))


def defer_resize(sb: SandboxHandle, instance_class: str = "db.t3.large") -> None:
    """An operator's earlier `modify-db-instance` without --apply-immediately: pending for the
    maintenance window (boto3 against the sandbox's RDS, as the AWS CLI would)."""
    import boto3

    client = boto3.client(
        "rds",
        region_name=sb.env["RUNBOOK_AWS_REGION"],
        endpoint_url=sb.env["RUNBOOK_AWS_ENDPOINT_URL"],
        aws_access_key_id=sb.env["RUNBOOK_AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=sb.env["RUNBOOK_AWS_SECRET_ACCESS_KEY"],
    )
    client.modify_db_instance(
        DBInstanceIdentifier=sb.env["RUNBOOK_RDS_INSTANCE_ID"],
        DBInstanceClass=instance_class,
        ApplyImmediately=False,
    )
    assert sb.state()["rds"]["pending_class"] == instance_class


def statuspage_entries(sb: SandboxHandle, since: int = 0) -> list[dict[str, Any]]:
    return sb.sink("statuspage")[since:]


def pages(sb: SandboxHandle, since: int = 0) -> list[str]:
    return [json.dumps(p) for p in sb.sink("pagerduty")[since:]]
