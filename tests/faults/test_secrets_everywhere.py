"""Secrets, everywhere (issue #15): every secret configured with a distinctive value — every
block `SecretStr` field (saved as block documents the flows load), the intake's tokens and HMAC
secrets, the approval secret, passwords inside database URLs — then every flow of
`flows/registry.py` run against the sandbox (real acts for health-check, llm-provider and an
approved rollback; dry runs for the rest), alerts posted to a real intake from every source.
Then everything that was written anywhere is searched for each value: Prefect's logs, artifacts,
flow-run parameters and states, task-run states, the Prefect server's own database file and
result storage, our ops database (ledger, timeline, incidents, alerts, outboxes, approvals), the
intake's log, the console, and what every sink received (Slack, PagerDuty, email, Statuspage).
Zero hits.

Not configured here (and why): the platform's Redis password (the local Redis has none, and a
client that sends AUTH to it is refused); keys the flows *generate* (store and OpenAI keys) are
not configured secrets — the security flows' own tests follow those.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterTimestamp,
)
from prefect.logging.handlers import APILogWorker

from flows.registry import FLOWS, load_flow
from intake import auth
from runbook.settings import get_settings
from sandbox.environment import SECRETS as SANDBOX_SECRETS
from sandbox.handle import SandboxHandle
from tests.flows.security_support import security_env
from tests.intake.intake_harness import IntakeProcess, fixture_payload
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
__all__ = ["security_env"]  # the fixture: short store-key grace, room in the budget

TAG = uuid.uuid4().hex[:6]
OWN = {  # configured here, distinctive: nothing else in the session uses these values
    "RUNBOOK_APPROVAL_SECRET": f"approval-secret-{TAG}-Kq7Zr2Wm9Xv4Bn8Lp3Hd6Tf1",
    "RUNBOOK_ALERTMANAGER_TOKEN": f"am-token-{TAG}-Ue5Yc8Ra2Qs",
    "RUNBOOK_GRAFANA_SECRET": f"grafana-hmac-{TAG}-Jx4Vb7Nk1",
    "RUNBOOK_SENTRY_SECRET": f"sentry-hmac-{TAG}-Gm3Ph6Dw0",
    "RUNBOOK_PAGERDUTY_SECRET": f"pd-webhook-hmac-{TAG}-Tz9Ke2Fy5",
    "RUNBOOK_GENERIC_SECRET": f"generic-hmac-{TAG}-Lw8Co4Si7",
}
OPS_DB_PASSWORD = f"opsdb-pw-{TAG}-Rb6Mx1Qa"
APP_DB_PASSWORD = f"appdb-pw-{TAG}-Hn5Vz3Ec"
OUR_REDIS_PASSWORD = f"ours-redis-pw-{TAG}-Yd2Wf8"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def configured_secrets(sb: SandboxHandle) -> dict[str, str]:
    """name → value of every secret this test configured (the sandbox's own are distinctive
    too: they exist only in the sandbox and in this environment)."""
    found = dict(OWN)
    found |= {
        "OPS_DB_PASSWORD": OPS_DB_PASSWORD,
        "APP_DB_PASSWORD": APP_DB_PASSWORD,
        "OUR_REDIS_PASSWORD": OUR_REDIS_PASSWORD,
        # the secret part of the Slack webhook URL (host and port are not secret)
        "SLACK_WEBHOOK_PATH": SANDBOX_SECRETS["slack_path"].rsplit("/", 1)[1],
    }
    found |= {f"sandbox:{k}": v for k, v in SANDBOX_SECRETS.items() if k != "slack_path"}
    return found


@pytest.fixture
def sweep_env(
    security_env: SandboxHandle,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    session_dir: Path,
) -> Iterator[tuple[SandboxHandle, IntakeProcess]]:
    """Every secret distinctive; an intake of our own with those tokens; block documents."""
    sb = security_env
    ops_url = with_password(pg_url, OPS_DB_PASSWORD)  # trust auth: the password is never asked
    values = {
        **OWN,
        "RUNBOOK_OPS_DATABASE_URL": ops_url,
        "RUNBOOK_APP_DATABASE_URL": with_password(
            sb.env["RUNBOOK_APP_DATABASE_URL"], APP_DB_PASSWORD
        ),
        "RUNBOOK_REDIS_URL": f"redis://:{OUR_REDIS_PASSWORD}@127.0.0.1:6379/0",
        "RUNBOOK_ENVIRONMENT": f"secrets-{TAG}",
        "RUNBOOK_ALLOW_AUTO_APPROVE": "0",
    }
    if staging := sb.env.get("RUNBOOK_APP_STAGING_DATABASE_URL"):
        values["RUNBOOK_APP_STAGING_DATABASE_URL"] = with_password(staging, APP_DB_PASSWORD)
    intake_values = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    intake_values |= {
        **OWN,
        "RUNBOOK_OPS_DATABASE_URL": ops_url,
        "RUNBOOK_INTAKE_DISPATCH": "false",  # nothing deployed to dispatch to; alerts persist
        "PREFECT_HOME": str(session_dir / "prefect-home"),
        "PREFECT_API_URL": "",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    intake = IntakeProcess(intake_values, tmp_path_factory.mktemp("secrets-intake")).start()
    values["RUNBOOK_INTAKE_URL"] = intake.url
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    # the session logs at WARNING; this sweep wants every INFO line the runs write to Prefect
    loggers = [logging.getLogger(n) for n in ("prefect", "prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    try:
        yield sb, intake
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        intake.stop()
        get_settings.cache_clear()


async def save_block_documents() -> None:
    """What `runbook blocks configure --from-env` does: the flows then load these documents."""
    from blocks import ALL_BLOCKS

    settings = get_settings()
    for block in ALL_BLOCKS:
        await block.aregister_type_and_schema()
        await block.from_settings(settings).asave(settings.environment, overwrite=True)


def signed(source: str, payload: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if source == "alertmanager":
        headers["Authorization"] = f"Bearer {OWN['RUNBOOK_ALERTMANAGER_TOKEN']}"
    elif source == "grafana":
        headers |= auth.sign_grafana(OWN["RUNBOOK_GRAFANA_SECRET"], body)
    elif source == "sentry":
        headers |= auth.sign_sentry(OWN["RUNBOOK_SENTRY_SECRET"], body)
        headers["Sentry-Hook-Resource"] = "issue"
    elif source == "pagerduty":
        headers |= auth.sign_pagerduty(OWN["RUNBOOK_PAGERDUTY_SECRET"], body)
        headers["X-Webhook-Id"] = uuid.uuid4().hex
    else:
        headers |= auth.sign_generic(OWN["RUNBOOK_GENERIC_SECRET"], body, int(time.time()))
    return f"/alerts/{source}", body, headers


async def post_every_source(intake: IntakeProcess) -> None:
    import httpx

    deliveries = [
        ("alertmanager", "alertmanager_firing"),
        ("grafana", "grafana_firing"),
        ("sentry", "sentry_issue"),
        ("pagerduty", "pagerduty_incident_triggered"),
        ("generic", "generic_firing"),
    ]
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        for source, fixture in deliveries:
            path, body, headers = signed(source, fixture_payload(fixture))
            answer = await client.post(path, content=body, headers=headers)
            assert answer.status_code == 202, (source, answer.text)
            forged = {**headers, "Authorization": "Bearer nope", "X-Signature": "sha256=00"}
            forged = {
                k: ("v1=00" if k == "X-PagerDuty-Signature" else v) for k, v in forged.items()
            }
            if source in {"alertmanager", "generic", "pagerduty"}:
                refused = await client.post(path, content=body, headers=forged)
                assert refused.status_code == 401, (source, refused.text)


async def run_every_flow(sb: SandboxHandle, pg_url: str) -> dict[str, Any]:
    """One run of each flow in the registry: real acts where marked, dry runs elsewhere."""
    flows = {name: load_flow(name) for name in FLOWS}
    states: dict[str, Any] = {}

    async def run(name: str, **params: Any) -> Any:
        state = await asyncio.wait_for(flows[name](**params, return_state=True), timeout=300)
        states[name] = state
        return state

    # real: a critical health check raises its alert through our intake (generic HMAC)
    sb.inject("db-pool-exhausted")
    await run("health-check")
    sb.reset()
    # real: §3 switches to the fallback model, pages, drafts a message to OpenAI (email)
    sb.inject("llm-outage")
    await run("llm-provider")
    sb.reset()
    # real, destructive: a rollback approved with a one-time code (approval secret, webhooks)
    sb.inject("bad-deploy")
    inc = f"inc-secrets-{TAG}"
    rolling = asyncio.create_task(run("rollback", incident_id=inc, verify_window_s=10))
    gate = await waiting_gate(pg_url, inc, timeout=120, running=rolling)
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="secrets sweep")
    await rolling
    sb.reset()

    window = datetime(2032, 3, 7, 2, 0, tzinfo=UTC)  # a Sunday 02:00 UTC, far ahead
    dry: list[tuple[str, dict[str, Any]]] = [
        ("high-error-rate", {}),
        ("high-latency", {}),
        ("database-connections", {}),
        ("complete-outage", {}),
        ("scale-replicas", {"replicas": 3}),
        ("scale-vertical", {"vcpus": 2, "memory_gb": 4}),
        ("rds-resize", {"instance_class": "db.t3.large"}),
        ("deploy-watch", {"window_s": 10}),
        ("manual-deploy", {"commit_sha": f"5ec{TAG}abc", "environment": "staging"}),
        ("db-migrate", {"environment": "staging"}),
        ("db-downgrade", {"environment": "staging"}),
        ("rotate-store-key", {"store_id": "store-123"}),
        ("rotate-openai-key", {}),
        ("security-incident", {"stores": ["store-123"]}),
        ("metrics-watch", {"window_s": 10}),
        ("maintenance-notice", {"now": window - timedelta(hours=48)}),
        ("scheduled-maintenance", {"now": window}),
        ("emergency-maintenance", {"reason": "secrets sweep rehearsal"}),
    ]
    for name, params in dry:
        await run(name, dry_run=True, **params)
    return states


async def prefect_haystacks(since: datetime) -> dict[str, str]:
    """Everything Prefect holds about the runs started since `since`."""
    APILogWorker.drain_all(timeout=15)
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
            limit=200,
        )
        ids = {r.id for r in runs}
        logs, offset = [], 0
        while True:
            page = await client.read_logs(
                log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)),
                limit=200,
                offset=offset,
            )
            logs += page
            if len(page) < 200:
                break
            offset += 200
        artifacts = [a for a in await client.read_artifacts(limit=200) if a.flow_run_id in ids]
        task_runs = [t for t in await client.read_task_runs(limit=200) if t.flow_run_id in ids]
        flow_names = {r.flow_id: (await client.read_flow(r.flow_id)).name for r in runs}

    def state(s: Any) -> str:
        return json.dumps(s.model_dump(mode="json") if s else None, default=str)

    return {
        "flow names": " ".join(sorted(set(flow_names.values()))),
        "logs": "\n".join(f"{log.name}: {log.message}" for log in logs),
        "artifacts": json.dumps([(a.key, a.description, a.data) for a in artifacts], default=str),
        "flow-run parameters": json.dumps([r.parameters for r in runs], default=str),
        "flow-run states": "\n".join(state(r.state) for r in runs),
        "task-run states": "\n".join(
            state(t.state) + json.dumps(t.task_inputs, default=str) for t in task_runs
        ),
    }


def files_haystack(*roots: Path) -> str:
    """The raw bytes of every file under `roots` (the Prefect server's SQLite database and its
    WAL, result storage), decoded leniently."""
    chunks = []
    for root in roots:
        if root.exists():
            for path in root.rglob("*"):
                if path.is_file():
                    chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


async def ops_haystack(pg_url: str) -> str:
    """Every row of every table of our ops database (ledger, timeline, incidents, alerts,
    approvals, both outboxes, …)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'runbook'"
        )
        tables = [r[0] for r in await cur.fetchall()]
        rows = []
        for table in tables:
            cur = await conn.execute(f'SELECT t::text FROM runbook."{table}" t')
            rows += [f"{table}: {r[0]}" for r in await cur.fetchall()]
    assert any(r.startswith("actions:") for r in rows) and any(
        r.startswith("action_events:") for r in rows
    ), "the ledger and the timeline were written"
    return "\n".join(rows)


async def test_every_flow_every_secret_zero_hits_anywhere(
    prefect_server: str,
    sweep_env: tuple[SandboxHandle, IntakeProcess],
    pg_url: str,
    session_dir: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sb, intake = sweep_env
    since = datetime.now(UTC) - timedelta(seconds=1)
    sinks_before = {n: len(sb.sink(n)) for n in ("slack", "pagerduty", "email", "statuspage")}
    secrets = configured_secrets(sb)
    settings = get_settings()
    assert settings.approval_secret is not None
    assert settings.approval_secret.get_secret_value() == OWN["RUNBOOK_APPROVAL_SECRET"]

    await save_block_documents()
    await post_every_source(intake)
    states = await run_every_flow(sb, pg_url)

    assert set(states) == set(FLOWS), "one run of every flow in the registry"
    crashed = {n: s.message for n, s in states.items() if s.is_crashed()}
    assert crashed == {}, crashed
    assert states["rollback"].is_completed(), states["rollback"]
    assert (await states["rollback"].aresult()).action_status == "done"
    assert (await states["llm-provider"].aresult()).action_status == "done"

    haystacks = await prefect_haystacks(since)
    assert set(haystacks.pop("flow names").split()) >= set(FLOWS)
    haystacks["prefect server files"] = files_haystack(session_dir / "server-home")
    haystacks["result storage"] = files_haystack(session_dir / "prefect-home" / "storage")
    haystacks["ops database"] = await ops_haystack(pg_url)
    haystacks["intake log"] = intake.log()
    for name, before in sinks_before.items():
        haystacks[f"sink {name}"] = json.dumps(sb.sink(name)[before:], default=str)
    haystacks["console"] = "".join(capfd.readouterr())
    assert "deploymentRollback" in json.dumps(sb.journal()), "a real act happened"
    assert len(haystacks["sink slack"]) > 100 and len(haystacks["sink pagerduty"]) > 100
    assert len(haystacks["sink email"]) > 100 and len(haystacks["logs"]) > 1000
    for where in ("prefect server files", "ops database", "flow-run parameters"):
        assert f"inc-secrets-{TAG}" in haystacks[where], f"{where}: not the runs' own records"

    leaks = [
        f"{name} in {where}"
        for where, text in haystacks.items()
        for name, value in secrets.items()
        if value in text
    ]
    assert leaks == [], leaks
