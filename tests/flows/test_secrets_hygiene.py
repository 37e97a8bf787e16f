"""Configured secrets never appear in logs, artifacts, flow-run parameters or notifications."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
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
    "RUNBOOK_SMTP_PASSWORD",
    "RUNBOOK_STATUSPAGE_API_KEY",
    "RUNBOOK_OPENAI_ADMIN_KEY",
)
# the whole of every flow's sweep (every flow, every secret, every store): tests/faults/
# test_secrets_everywhere.py


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

    since = datetime.now(UTC) - timedelta(seconds=1)
    sb.inject("bad-deploy")
    incident = f"inc-sec-{uuid.uuid4().hex[:8]}"
    running = asyncio.create_task(safety_rollback(incident, target_suffix="-secrets"))
    gate = await waiting_gate(pg_url, incident, running=running)
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
        for _ in range(60):  # the careless line arrives in a batch: wait for it (≤ 60 s)
            logs, offset = [], 0
            while True:  # every log line since the test began (other tests write many)
                page = await client.read_logs(
                    log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)),
                    limit=200,
                    offset=offset,
                )
                logs += page
                if len(page) < 200:
                    break
                offset += 200
            if any("debug: railway token is" in log.message for log in logs):
                break
            await asyncio.sleep(1)
        artifacts = await client.read_artifacts()
        runs = await client.read_flow_runs()
        task_runs = await client.read_task_runs()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        ledger_rows = [
            r[0]
            for table in ("actions", "action_events", "notifications", "approvals")
            for r in await (await conn.execute(f"SELECT t::text FROM runbook.{table} t")).fetchall()
        ]
    haystacks = {
        "logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([a.data for a in artifacts], default=str),
        "parameters": json.dumps([r.parameters for r in runs], default=str),
        "slack": json.dumps(sb.sink("slack"), default=str),
        "pagerduty": json.dumps(
            [{k: v for k, v in m.items() if k != "routing_key"} for m in sb.sink("pagerduty")],
            default=str,
        ),
        "email": json.dumps(sb.sink("email"), default=str),
        "statuspage": json.dumps(sb.sink("statuspage"), default=str),
        "flow-run states": json.dumps(
            [r.state.model_dump(mode="json") for r in runs if r.state], default=str
        ),
        "task-run states": json.dumps(
            [t.state.model_dump(mode="json") for t in task_runs if t.state], default=str
        ),
        "ledger and timeline": "\n".join(ledger_rows),
        "console": "".join(capfd.readouterr()),
    }
    assert "debug: railway token is ********" in haystacks["logs"], "the careless log arrived"
    for where, text in haystacks.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} leaked into {where}"
