"""Intake test harness: real uvicorn subprocesses over HTTP, real Postgres, real Prefect.

`IntakeProcess` runs `intake.cli.run` in a child process (its log in a file, so tests can grep it
for secrets); `Sender` signs real-format fixture payloads exactly as each source does.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from intake import auth
from sandbox.local import process
from sandbox.local.prefect_server import free_port

FIXTURES = Path(__file__).parent / "fixtures"

SECRETS = {
    "RUNBOOK_ALERTMANAGER_TOKEN": "am-token-8c1f2e",
    "RUNBOOK_GRAFANA_SECRET": "grafana-secret-5b7d",
    "RUNBOOK_SENTRY_SECRET": "sentry-secret-91aa",
    "RUNBOOK_PAGERDUTY_SECRET": "pagerduty-secret-3f0c",
    "RUNBOOK_GENERIC_SECRET": "generic-secret-77e4",
}
GRAFANA_TS_HEADER = "X-Grafana-Alerting-Signature-Timestamp"
# our own deployment name, so the session's Prefect server may also hold the real "runbook" ones
DEPLOYMENT = "intake-tests"
ROUTE_FLOWS = (
    "high-error-rate",
    "high-latency",
    "llm-provider",
    "database-connections",
    "complete-outage",
)


def fixture_payload(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


class Sender:
    """Builds signed requests for each source the way the real sender does."""

    def __init__(self, *, grafana_timestamp_header: str | None = None) -> None:
        self.grafana_timestamp_header = grafana_timestamp_header

    def headers(
        self, source: str, body: bytes, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        now = int(time.time())
        if source == "alertmanager":
            headers["Authorization"] = f"Bearer {SECRETS['RUNBOOK_ALERTMANAGER_TOKEN']}"
        elif source == "grafana":
            headers.update(
                auth.sign_grafana(
                    SECRETS["RUNBOOK_GRAFANA_SECRET"],
                    body,
                    ts=now if self.grafana_timestamp_header else None,
                    timestamp_header=self.grafana_timestamp_header,
                )
            )
        elif source == "sentry":
            headers.update(auth.sign_sentry(SECRETS["RUNBOOK_SENTRY_SECRET"], body))
        elif source == "pagerduty":
            headers.update(auth.sign_pagerduty(SECRETS["RUNBOOK_PAGERDUTY_SECRET"], body))
            headers["X-Webhook-Id"] = uuid.uuid4().hex
        else:
            headers.update(auth.sign_generic(SECRETS["RUNBOOK_GENERIC_SECRET"], body, now))
        headers.update(extra or {})
        return headers

    def request(
        self, source: str, payload: Any, extra: dict[str, str] | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        return f"/alerts/{source}", body, self.headers(source, body, extra)


def generic_alert(name: str, **fields: Any) -> dict[str, Any]:
    """A generic-format alert; `labels` are merged over a unique target by default."""
    payload: dict[str, Any] = {
        "source": "tests",
        "name": name,
        "severity": "critical",
        "summary": fields.pop("summary", name),
        "dedup_key": name,
        "labels": {"environment": "production"},
        "annotations": {},
        "status": "firing",
    }
    payload["labels"].update(fields.pop("labels", {}))
    payload.update(fields)
    return payload


class IntakeProcess:
    """`intake.cli.run(host, port)` in a child process bound to 127.0.0.1."""

    def __init__(self, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.log_path = log_dir / f"intake-{self.port}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, ready: int = 200) -> IntakeProcess:
        """Start; returns once /healthz answers `ready` (200: up with its database)."""
        code = f"from intake.cli import run; run('127.0.0.1', {self.port})"
        self.process = process.spawn([sys.executable, "-c", code], self.env, self.log_path)
        process.wait_ready(
            self.process,
            process.http_ok(f"{self.url}/healthz", ready),
            name="intake",
            timeout=timeout,
            log=self.log_path,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        process.kill(self.process)

    def stop(self) -> None:
        process.stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def register_route_deployments(api_url: str) -> None:
    """A deployment of every route flow (no worker: runs stay scheduled)."""
    from prefect import Flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        for name in ROUTE_FLOWS:
            flow: Flow[..., None] = Flow(fn=_remediate, name=name)
            deployment = await flow.ato_deployment(name=DEPLOYMENT)
            await deployment.aapply()


def _remediate(incident_id: str) -> None:
    """Stands in for the runbook flows: intake only needs something to create runs of."""


async def flow_runs_by_incident(api_url: str) -> dict[str, int]:
    """How many flow runs exist per idempotency key (= incident id)."""
    from prefect.client.orchestration import PrefectClient

    counts: dict[str, int] = {}
    async with PrefectClient(api=api_url) as client:
        offset = 0
        while True:
            runs = await client.read_flow_runs(limit=200, offset=offset)
            for run in runs:
                if run.idempotency_key:
                    counts[run.idempotency_key] = counts.get(run.idempotency_key, 0) + 1
            if len(runs) < 200:
                return counts
            offset += 200


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.1
) -> None:
    """Wait until `check()` holds (assert-friendly: fails with the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout:g} s")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def flow_run_of(api_url: str, incident_id: str) -> tuple[str, str, dict[str, Any]]:
    """(flow name, deployment name, parameters) of the run created for an incident."""
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        for run in await client.read_flow_runs(limit=200):
            if run.idempotency_key == incident_id and run.deployment_id:
                deployment = await client.read_deployment(run.deployment_id)
                flow = await client.read_flow(run.flow_id)
                return flow.name, deployment.name, dict(run.parameters)
    raise AssertionError(f"no flow run for incident {incident_id}")


class Sink:
    """A fake Slack incoming webhook or PagerDuty Events v2 endpoint on 127.0.0.1.

    Answers `status` (settable while running): 200 `ok` as Slack does, 202 `{"status":
    "success", "dedup_key"}` as PagerDuty does, or the error status given. `received` holds the
    JSON bodies it answered with 2xx; `attempts` counts every request."""

    def __init__(self, kind: str = "slack", status: int | None = None) -> None:
        self.kind = kind
        self.status = status or (202 if kind == "pagerduty" else 200)
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sink.attempts += 1
                status = sink.status
                if status < 300:
                    sink.received.append(body)
                if status < 300 and sink.kind == "pagerduty":
                    answer = json.dumps({"status": "success", "dedup_key": body["dedup_key"]})
                else:
                    answer = "ok" if status < 300 else "unavailable"
                self.send_response(status)
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        path = "/services/T000/B000/XXXX" if self.kind == "slack" else "/v2/enqueue"
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled metric in a /metrics page."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise AssertionError(f"{name} not in /metrics")
    return float(found.group(1))
