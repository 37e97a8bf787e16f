"""Configured secrets never appear in logs, artifacts, flow-run parameters or notifications."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker

from blocks.railway import Railway
from flows.health import health_check
from sandbox.handle import SandboxHandle
from tests.flows.safety_flow import safety_rollback
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration

SECRET_VARS = (
    "RUNBOOK_RAILWAY_TOKEN",
    "RUNBOOK_LANGSMITH_API_KEY",
    "RUNBOOK_LLM_API_KEY",
    "RUNBOOK_SLACK_WEBHOOK_URL",
    "RUNBOOK_PAGERDUTY_ROUTING_KEY",
    "RUNBOOK_AWS_SECRET_ACCESS_KEY",
    "RUNBOOK_APPROVAL_SECRET",
)


@flow(name="careless-logging")
async def careless_logging() -> None:
    """A flow that logs a secret by mistake: the redaction must catch it."""
    railway = await Railway.resolve()
    get_run_logger().warning("debug: railway token is %s", railway.token.get_secret_value())


async def test_secrets_grep_finds_nothing(
    prefect_server: str,
    platform_env: SandboxHandle,
    pg_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sb = platform_env
    import os

    secrets = {name: os.environ[name] for name in SECRET_VARS if os.environ.get(name)}
    assert len(secrets) >= 5, "the sandbox configures real-looking secrets"

    sb.inject("bad-deploy")
    incident = f"inc-sec-{uuid.uuid4().hex[:8]}"
    running = asyncio.create_task(safety_rollback(incident, target_suffix="-secrets"))
    gate = await waiting_gate(pg_url, incident)
    await resume(
        gate,
        approve=True,
        approver="alice",
        code=code_from_slack(sb, "alice", gate),
        reason="secrets test",
    )
    assert (await running)["status"] == "done"
    await health_check()
    await careless_logging()
    APILogWorker.drain_all(timeout=10)

    async with get_client() as client:
        logs = await client.read_logs()
        artifacts = await client.read_artifacts()
        runs = await client.read_flow_runs()
    haystacks = {
        "logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([a.data for a in artifacts], default=str),
        "parameters": json.dumps([r.parameters for r in runs], default=str),
        "slack": json.dumps(sb.sink("slack"), default=str),
        "pagerduty": json.dumps(
            [{k: v for k, v in m.items() if k != "routing_key"} for m in sb.sink("pagerduty")],
            default=str,
        ),
        "console": "".join(capfd.readouterr()),
    }
    assert "debug: railway token is ********" in haystacks["logs"], "the careless log arrived"
    for where, text in haystacks.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} leaked into {where}"
