"""Fault suite (issue #15): each dependency misbehaving, one at a time, against the real parts —
the sandbox's fakes over HTTP (faults injected through its control API), the session's Prefect
server (or one of the test's own that it stops and starts), the local Postgres and Redis. Nothing
of ours is patched: a fault is a real refusal, a real silence or a real answer on the wire.

Expected of every fault: bounded retries that honour `Retry-After`, a clear end state, a human
told through a channel that still works, no action done twice, no accepted alert lost. Faults
already proved elsewhere are listed in docs/reliability.md with their tests; this file fills the
gaps.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from blocks.railway import Railway
from runbook import ledger, opsdb
from runbook.incidents import get_incident
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle, start_sandbox
from sandbox.local.prefect_server import LocalPrefectServer, free_port
from tasks import railway
from tests.intake.intake_harness import DEPLOYMENT as INTAKE_DEPLOYMENT
from tests.intake.intake_harness import SECRETS as INTAKE_SECRETS
from tests.intake.intake_harness import (
    IntakeProcess,
    Sender,
    flow_runs_by_incident,
    generic_alert,
    register_route_deployments,
)
from tests.intake.intake_harness import eventually as harness_eventually
from tests.tasks.netfakes import closed_port, silent_listener

pytestmark = pytest.mark.integration

DEAD = f"http://127.0.0.1:{closed_port()}"  # nothing listens there: connection refused
SEND = Sender()
START_S = 180.0  # a server or sandbox of a test's own, on a busy shared machine


# -- helpers --------------------------------------------------------------------------------------
def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def pages(sb: SandboxHandle, since: int = 0) -> list[str]:
    return [json.dumps(p) for p in sb.sink("pagerduty")[since:]]


def slack(sb: SandboxHandle, since: int = 0) -> list[str]:
    return [str(m.get("text", "")) for m in sb.sink("slack")[since:]]


def mutations(sb: SandboxHandle, operation: str) -> int:
    return sum(1 for e in sb.journal() if e["operation"] == operation)


async def until(check: Callable[[], bool], timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:g} s"
        await asyncio.sleep(0.1)


def incident(prefix: str = "inc-fault") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Seen:
    at: float
    status: int
    mutation: bool


@dataclass
class Relay:
    """An HTTP relay in front of a sandbox fake that records what came back (time, status):
    the test sees the 429s the client was given and when it asked again."""

    upstream: str
    seen: list[Seen] = field(default_factory=list)


@contextmanager
def http_relay(upstream: str) -> Iterator[tuple[Relay, str]]:
    relay = Relay(upstream)
    client = httpx.Client(timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
            answer = client.post(relay.upstream, content=body, headers=headers)
            query = str(json.loads(body).get("query", ""))
            relay.seen.append(
                Seen(time.monotonic(), answer.status_code, query.lstrip().startswith("mutation"))
            )
            self.send_response(answer.status_code)
            for name in ("Content-Type", "Retry-After"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay, f"http://127.0.0.1:{server.server_address[1]}/graphql/v2"
    finally:
        server.shutdown()
        server.server_close()
        client.close()


@dataclass
class Scripted:
    """A webhook peer (Slack or PagerDuty Events v2) answering `replies` in order, then the
    last one for ever; every request recorded with its arrival time."""

    kind: str
    replies: list[tuple[int, dict[str, str]]]
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


@contextmanager
def scripted_peer(
    kind: str, *replies: tuple[int, dict[str, str]]
) -> Iterator[tuple[Scripted, str]]:
    peer = Scripted(kind, list(replies))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            n = len(peer.seen)
            peer.seen.append((time.monotonic(), body))
            status, headers = peer.replies[min(n, len(peer.replies) - 1)]
            if status < 300 and peer.kind == "pagerduty":
                answer = json.dumps({"status": "success", "dedup_key": body.get("dedup_key")})
            elif status < 300:
                answer = "ok"
            else:
                answer = json.dumps({"status": "throttle event", "message": "slow down"})
            data = answer.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = "/v2/enqueue" if kind == "pagerduty" else "/services/T0/B0/fault"
    try:
        yield peer, f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


class TcpRelay:
    """127.0.0.1:port → a TCP server (our ops database), which the test can cut (listener and
    every open connection gone: the database is down) and restore on the same address."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.port = free_port()
        self.url = urlunsplit(parts._replace(netloc=self._netloc(parts)))
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _netloc(self, parts: Any) -> str:
        user = f"{parts.username}@" if parts.username else ""
        return f"{user}127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()


@asynccontextmanager
async def tcp_relay(url: str) -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(url)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()


# -- Railway: 429 with Retry-After ----------------------------------------------------------------
@pytest.fixture(scope="module")
def rate_limited_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """A sandbox of this module's own whose Railway allows one request per second."""
    handle = start_sandbox(
        data_dir=tmp_path_factory.mktemp("sandbox-429"),
        railway_rps=1,
        traffic_rps=2,
        timeout=START_S,
    )
    try:
        yield handle
    finally:
        handle.stop()


async def test_railway_429_on_a_mutation_waits_retry_after_then_applies_it_once(
    rate_limited_sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = rate_limited_sandbox
    env(monkeypatch, RUNBOOK_RETRY_FAST="0")  # real waits: Retry-After must be honoured
    e = sb.env
    before = mutations(sb, "variableCollectionUpsert")
    with http_relay(e["RUNBOOK_RAILWAY_ENDPOINT"]) as (relay, endpoint):
        block = Railway(
            endpoint=endpoint,
            token=SecretStr(e["RUNBOOK_RAILWAY_TOKEN"]),
            project_id=e["RUNBOOK_RAILWAY_PROJECT_ID"],
            environment_id=e["RUNBOOK_RAILWAY_ENVIRONMENT_ID"],
            service_id=e["RUNBOOK_RAILWAY_SERVICE_ID"],
        )
        for attempt in range(3):  # a read and the change in one second: the change is refused
            relay.seen.clear()
            await railway.get_service_instance.fn(block)
            await railway.set_variables.fn(
                block, {"DATABASE_POOL_SIZE": str(20 + attempt)}, skip_deploys=True
            )
            if any(s.mutation and s.status == 429 for s in relay.seen):
                break
        seen = [s for s in relay.seen if s.mutation]
    assert [s.status for s in seen] == [429, 200], relay.seen
    assert seen[1].at - seen[0].at >= 0.9, "Retry-After: 1 was honoured before sending again"
    assert mutations(sb, "variableCollectionUpsert") == before + attempt + 1, (
        "each change reached Railway exactly once (a 429 is refused before it runs)"
    )
    assert sb.state()["pool_size"] == 20 + attempt


# -- Railway: 5xx, silence, an answer lost after the change ---------------------------------------
async def test_railway_500_after_a_flows_change_is_sent_once_and_reconciled(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    """§3 switches to the fallback model; Railway applies it and answers 500. The switch is not
    sent again: the platform is read, the ledger records it done (reconciled)."""
    from flows.llm_provider import llm_provider

    sb = platform_env
    sb.inject("llm-outage")
    sb.inject("railway-500", on="mutation")
    before = mutations(sb, "variableCollectionUpsert")
    result = await llm_provider()
    assert mutations(sb, "variableCollectionUpsert") == before + 1, "one change reached Railway"
    assert result.action == "switch_model" and result.action_status == "done", result
    assert sb.state()["DEFAULT_MODEL"] == "gpt-4o-mini"
    async with await opsdb.connect() as conn:
        entries = await ledger.entries(conn, result.incident_id)
    assert entries[-1].status == "done" and entries[-1].outcome == {"reconciled": True}


@pytest.mark.parametrize("fault", ["5xx", "silent"])
async def test_railway_down_ends_the_run_failed_changes_nothing_and_pages_once(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """Every Railway request answered 500, or never answered (a hung server): the run ends
    Failed within its retries (no hang), nothing is changed, the on-call gets one page with the
    run's link."""
    from flows.llm_provider import llm_provider

    sb = platform_env
    sb.inject("llm-outage")  # there is something to remediate
    before, paged_before = len(sb.journal()), len(sb.sink("pagerduty"))
    with silent_listener() as port:
        if fault == "5xx":
            sb.inject("railway-500", count=100)
        else:
            env(
                monkeypatch,
                RUNBOOK_RAILWAY_ENDPOINT=f"http://127.0.0.1:{port}/graphql/v2",
                RUNBOOK_RAILWAY_TIMEOUT_S="1",
            )
        state = await asyncio.wait_for(llm_provider(return_state=True), timeout=180)
    sb.clear("railway-500")
    assert state.is_failed(), state
    assert [e for e in sb.journal()[before:] if "fault" not in e] == [], "nothing changed"
    failed = [p for p in pages(sb, paged_before) if "llm-provider run" in p]
    assert len(failed) == 1, pages(sb, paged_before)
    assert "/v2/runs/flow-run/" in failed[0]


# -- the platform's data stores -------------------------------------------------------------------
async def test_app_redis_down_health_check_completes_and_reports_it_unreachable(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform's Redis refuses connections: the health-check run still completes, every
    Redis check says why it could not look, the other checks are unaffected, nothing changes."""
    from flows.health import health_check
    from runbook.domain import Status

    sb = platform_env
    env(monkeypatch, RUNBOOK_APP_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    before = len(sb.journal())
    state = await health_check(return_state=True)
    assert state.is_completed(), state
    report = await state.aresult()
    redis_checks = [c for c in report.checks if c.component == "redis"]
    assert len(redis_checks) == 4
    assert all(c.status is Status.UNAVAILABLE for c in redis_checks), redis_checks
    assert all("connection refused" in c.summary for c in redis_checks), redis_checks
    assert report.by_name("api_health").status is Status.OK
    assert sb.journal()[before:] == []


async def test_app_redis_unreachable_reaches_a_human(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.health import health_check

    sb = platform_env
    env(monkeypatch, RUNBOOK_APP_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    paged_before, slack_before = len(sb.sink("pagerduty")), len(sb.sink("slack"))
    await health_check()
    told = pages(sb, paged_before) + slack(sb, slack_before)
    assert any("redis" in t.lower() for t in told), told


# -- our own ops database -------------------------------------------------------------------------
async def test_ops_database_lost_between_act_and_record_pages_and_the_rerun_does_not_repeat(
    prefect_server: str, platform_env: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§3's switch reaches Railway; its answer is slow, and while it waits our ops database
    goes away (every connection cut). The run fails and pages through PagerDuty directly (the
    outbox is in the database that is down); the change happened once. With the database back,
    a rerun for the same incident does not send it again."""
    from flows.llm_provider import llm_provider

    sb = platform_env
    sb.inject("llm-outage")
    async with tcp_relay(pg_url) as relay:
        env(monkeypatch, RUNBOOK_OPS_DATABASE_URL=relay.url, RUNBOOK_RAILWAY_TIMEOUT_S="8")
        sb.inject("railway-timeout-after-apply", hold_s=20, on="mutation")
        before = mutations(sb, "variableCollectionUpsert")
        paged_before = len(sb.sink("pagerduty"))
        inc = incident("inc-opsdb")
        running: asyncio.Task[Any] = asyncio.create_task(
            llm_provider(incident_id=inc, return_state=True)  # type: ignore[arg-type]
        )
        await until(
            lambda: running.done() or mutations(sb, "variableCollectionUpsert") > before,
            what="the switch reaching Railway",
        )
        assert not running.done(), running
        await relay.cut()  # the ops database is down from here on
        state = await asyncio.wait_for(running, timeout=120)
        assert state.is_failed(), state
        assert mutations(sb, "variableCollectionUpsert") == before + 1
        failed = [p for p in pages(sb, paged_before) if "llm-provider run" in p]
        assert len(failed) == 1, pages(sb, paged_before)
        assert "ops database" in failed[0] or "OperationalError" in failed[0], failed[0]

        await relay.start()  # the database is back
        again = await llm_provider(incident_id=inc)
    assert mutations(sb, "variableCollectionUpsert") == before + 1, "not sent again"
    assert sb.state()["DEFAULT_MODEL"] == "gpt-4o-mini"
    assert again.action_status == "none" and "already on the fallback" in again.why, again
    async with await opsdb.connect(pg_url) as conn:
        entries = await ledger.entries(conn, inc)
    # the record never claims less than happened: the act stays `started` (outcome unknown to
    # the ledger, a human paged), so no later run of this incident sends it blind
    assert [(e.action, e.status, e.attempts) for e in entries] == [("switch_model", "started", 1)]


# -- the human channels: Slack down, PagerDuty rate limiting -------------------------------------
async def notification_rows(marker: str) -> list[tuple[str, str]]:
    async with await opsdb.connect() as conn:
        cur = await conn.execute(
            "SELECT channel, status FROM runbook.notifications WHERE body LIKE %s ORDER BY id",
            (f"%{marker}%",),
        )
        return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]


async def due_now(marker: str) -> None:
    """Time passes: the outbox's pending rows that mention `marker` are due again."""
    async with await opsdb.connect() as conn:
        await conn.execute(
            "UPDATE runbook.notifications SET next_attempt_at = now()"
            " WHERE status = 'pending' AND body LIKE %s",
            (f"%{marker}%",),
        )


async def test_pagerduty_429_is_waited_out_per_retry_after_and_pages_once(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.notifications import page

    marker = incident("pd429")
    with scripted_peer("pagerduty", (429, {"Retry-After": "1"}), (202, {})) as (peer, url):
        env(monkeypatch, RUNBOOK_PAGERDUTY_EVENTS_URL=url, RUNBOOK_RETRY_FAST="0")
        accepted = await page(f"{marker}: database down", {"incident": marker})
    assert accepted is True
    assert len(peer.seen) == 2, "refused by the rate limit, so sent again — once"
    assert peer.seen[1][0] - peer.seen[0][0] >= 0.9, "Retry-After: 1 was honoured"
    assert {body["dedup_key"] for _, body in peer.seen} == {marker}
    assert await notification_rows(marker) == [("pagerduty", "sent")]


async def test_pagerduty_rate_limiting_and_slack_down_the_page_still_reaches_a_human(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PagerDuty keeps answering 429 and Slack is down: the page goes to the ops mailbox at
    once; both are kept in the outbox, and delivered — once — when the channels are back."""
    from flows.notifications import flush_outbox, page

    sb = platform_env
    marker = incident("pd429-slackdown")
    mails_before, paged_before, slack_before = (
        len(sb.sink("email")),
        len(sb.sink("pagerduty")),
        len(sb.sink("slack")),
    )
    with scripted_peer("pagerduty", (429, {"Retry-After": "0"})) as (peer, url):
        env(
            monkeypatch,
            RUNBOOK_PAGERDUTY_EVENTS_URL=url,
            RUNBOOK_SLACK_WEBHOOK_URL=f"{DEAD}/services/T0/B0/x",
        )
        accepted = await page(f"{marker}: API down for 10 minutes", {"incident": marker})
    assert accepted is False
    assert len(peer.seen) == 2, "bounded: one retry, then the fallbacks"
    mails = [m for m in sb.sink("email")[mails_before:] if marker in m["subject"] + m["body"]]
    assert len(mails) == 1 and "PAGE NOT DELIVERED" in mails[0]["subject"], mails
    assert await notification_rows(marker) == [
        ("pagerduty", "pending"),
        ("slack", "pending"),
        ("email", "sent"),
    ]

    env(  # both channels are back
        monkeypatch,
        RUNBOOK_PAGERDUTY_EVENTS_URL=sb.env["RUNBOOK_PAGERDUTY_EVENTS_URL"],
        RUNBOOK_SLACK_WEBHOOK_URL=sb.env["RUNBOOK_SLACK_WEBHOOK_URL"],
    )
    await due_now(marker)
    await flush_outbox()
    assert sum(marker in p for p in pages(sb, paged_before)) == 1
    assert sum(marker in t for t in slack(sb, slack_before)) == 1
    assert {s for _, s in await notification_rows(marker)} == {"sent"}


async def test_slack_down_during_an_incident_run_it_acts_once_pages_and_slack_hears_later(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§3 in an OpenAI outage with Slack down: the run still switches models (once) and ends
    Completed; the escalation reaches PagerDuty; the Slack summary waits in the outbox and is
    delivered when Slack is back."""
    from flows.llm_provider import llm_provider
    from flows.notifications import flush_outbox

    sb = platform_env
    sb.inject("llm-outage")
    env(monkeypatch, RUNBOOK_SLACK_WEBHOOK_URL=f"{DEAD}/services/T0/B0/x")
    before = mutations(sb, "variableCollectionUpsert")
    paged_before, slack_before = len(sb.sink("pagerduty")), len(sb.sink("slack"))
    state = await llm_provider(return_state=True)
    assert state.is_completed(), state
    result = await state.aresult()
    assert result.action_status == "done"
    assert mutations(sb, "variableCollectionUpsert") == before + 1
    assert any(result.incident_id in p for p in pages(sb, paged_before)), "on-call paged"
    assert slack(sb, slack_before) == []
    rows = await notification_rows(result.incident_id)
    assert ("slack", "pending") in rows, rows

    env(monkeypatch, RUNBOOK_SLACK_WEBHOOK_URL=sb.env["RUNBOOK_SLACK_WEBHOOK_URL"])
    await due_now(result.incident_id)
    await flush_outbox()
    told = [t for t in slack(sb, slack_before) if result.incident_id in t]
    assert told and any("llm-provider" in t for t in told), told
    assert mutations(sb, "variableCollectionUpsert") == before + 1


# -- the intake: PagerDuty rate limiting, the Prefect API down while alerts arrive ----------------
@pytest.fixture
def intake_env(pg_url: str, session_dir: Path) -> Iterator[dict[str, str]]:
    """An intake process's environment, on an ops database of this test's own."""
    name = f"runbook_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    values = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    values.update(INTAKE_SECRETS)
    values.update(
        {
            "RUNBOOK_OPS_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
            "RUNBOOK_INTAKE_DISPATCH_POLL_S": "0.2",
            "RUNBOOK_INTAKE_DISPATCH_BACKOFF_S": "0.1",
            "RUNBOOK_INTAKE_DISPATCH_BACKOFF_MAX_S": "0.5",
            "RUNBOOK_INTAKE_COOLDOWN_S": "2",
            "RUNBOOK_DEPLOYMENT_NAME": INTAKE_DEPLOYMENT,
            "RUNBOOK_ENVIRONMENT": incident("env"),  # no block documents: channels from env
            "PREFECT_HOME": str(session_dir / "prefect-home"),
            "PREFECT_API_URL": "",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    yield values
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def spawn_intake(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., IntakeProcess]]:
    """Start intake processes; every one is stopped (by its PID) afterwards."""
    started: list[IntakeProcess] = []
    log_dir = tmp_path_factory.mktemp("intake-logs")

    def spawn(values: dict[str, str]) -> IntakeProcess:
        proc = IntakeProcess(values, log_dir)
        started.append(proc)
        return proc.start()

    yield spawn
    for proc in started:
        proc.stop()


async def outbox_rows(url: str, incident_id: str) -> dict[str, tuple[Any, ...]]:
    """action → (done, result, attempts)"""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT action, done_at IS NOT NULL, result, attempts FROM runbook.outbox"
            " WHERE incident_id = %s",
            (incident_id,),
        )
        return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


async def post_alert(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    path, body, headers = SEND.request("generic", payload)
    return await client.post(path, content=body, headers=headers)


async def test_intake_page_refused_429_is_retried_no_sooner_than_retry_after(
    prefect_server: str, intake_env: dict[str, str], spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """A flow that cannot start is paged by the intake; PagerDuty answers 429 Retry-After: 3.
    The page is sent again — once, and not before those 3 s (the dispatcher's own backoff is
    0.1 s here)."""
    with (
        scripted_peer("pagerduty", (429, {"Retry-After": "3"}), (202, {})) as (pd, pd_url),
        scripted_peer("slack", (200, {})) as (sl, sl_url),
    ):
        proc = spawn_intake(
            {
                **intake_env,
                "PREFECT_API_URL": f"{prefect_server}/api",
                "RUNBOOK_DEPLOYMENT_NAME": incident("absent"),  # the flow cannot start
                "RUNBOOK_PAGERDUTY_EVENTS_URL": pd_url,
                "RUNBOOK_PAGERDUTY_ROUTING_KEY": "pd-faults-routing-key-5e1c",
                "RUNBOOK_SLACK_WEBHOOK_URL": sl_url,
            }
        )
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            answer = await post_alert(client, generic_alert("HighLatency", summary="p99 12s"))
        assert answer.status_code == 202
        inc = answer.json()["incident"]
        db = intake_env["RUNBOOK_OPS_DATABASE_URL"]

        async def paged() -> bool:
            return bool((await outbox_rows(db, inc)).get("page", (False,))[0])

        await harness_eventually(paged, timeout=90)
    assert [body["dedup_key"] for _, body in pd.seen] == [inc, inc]
    assert pd.seen[1][0] - pd.seen[0][0] >= 2.9, "Retry-After: 3 was honoured"
    assert (await outbox_rows(db, inc))["page"] == (True, "pagerduty ok", 2)
    assert len(sl.seen) == 1, "Slack was told once"


OUTAGE_S = 20.0  # the 60 s, shortened: see the docstring


async def test_prefect_api_down_while_alerts_keep_arriving_none_is_lost(
    intake_env: dict[str, str], spawn_intake: Callable[..., IntakeProcess], tmp_path: Path
) -> None:
    """The Prefect API (a server of this test's own) is down for OUTAGE_S while alerts keep
    arriving: each is answered 202 and persisted; when Prefect is back every firing incident
    gets exactly one flow run and the one resolved during the outage gets none.

    20 s instead of 60 s: the dispatcher's backoff reaches its cap (0.5 s here) within a few
    attempts, so from then on every second of outage is the same loop of failed attempts."""
    server = LocalPrefectServer(tmp_path / "prefect", port=free_port(), ui=False)
    server.start(timeout=START_S)
    try:
        await register_route_deployments(server.api_url)
        proc = spawn_intake({**intake_env, "PREFECT_API_URL": server.api_url})
        server.stop()  # the Prefect API is down from here

        names = ["HighErrorRate", "HighLatency", "OpenAIErrors", "PostgresqlDown", "ApiDown"]
        accepted: dict[str, int] = {}  # incident → firing deliveries answered 202
        gone = generic_alert("SlowResponses", labels={"target": incident("flap")})
        resolved_incident = ""
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            started, n = time.monotonic(), 0
            while time.monotonic() - started < OUTAGE_S:
                answer = await post_alert(client, generic_alert(names[n % len(names)]))
                assert answer.status_code == 202, answer.text
                inc = answer.json()["incident"]
                accepted[inc] = accepted.get(inc, 0) + 1
                if n == 3:  # one problem fires and resolves while Prefect is down
                    fired = await post_alert(client, gone)
                    resolved = await post_alert(client, {**gone, "status": "resolved"})
                    assert resolved.json()["status"] == "resolved", resolved.text
                    resolved_incident = fired.json()["incident"]
                assert (await client.get("/healthz")).status_code == 200
                n += 1
                await asyncio.sleep(0.5)
            metrics = (await client.get("/metrics")).text
        assert len(accepted) == len(names) and sum(accepted.values()) == n
        assert 'intake_dispatch_failures_total{action="flow"}' in metrics

        server.start(timeout=START_S)  # same port, same database: Prefect is back

        async def all_dispatched() -> bool:
            runs = await flow_runs_by_incident(server.api_url)
            return all(runs.get(i) for i in accepted)

        await harness_eventually(all_dispatched, timeout=120)
        await asyncio.sleep(1.5)  # several dispatch polls later: still one run each
        runs = await flow_runs_by_incident(server.api_url)
        assert runs == dict.fromkeys(accepted, 1), runs  # none for the resolved one
        db = intake_env["RUNBOOK_OPS_DATABASE_URL"]
        async with await opsdb.connect(db) as conn:
            counted = {i: await get_incident(conn, i) for i in accepted}
        assert {i: c.alert_count for i, c in counted.items() if c} == accepted, "none lost"
        assert (await outbox_rows(db, resolved_incident))["flow"][:2] == (True, "cancelled")
    finally:
        server.stop()


# -- alerts that must not start a remediation -----------------------------------------------------
async def test_suppressed_and_resolved_alerts_start_no_flow_run_while_a_firing_one_does(
    prefect_server: str, intake_env: dict[str, str], spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """With the dispatcher working (a firing alert gets its run), an alert inside a maintenance
    window is suppressed and a resolved alert nobody saw firing is recorded: neither ever gets
    a flow run, however many dispatch polls pass."""
    api_url = f"{prefect_server}/api"
    await register_route_deployments(api_url)
    proc = spawn_intake({**intake_env, "PREFECT_API_URL": api_url})
    db = intake_env["RUNBOOK_OPS_DATABASE_URL"]
    async with await opsdb.connect(db) as conn:
        await conn.execute(
            "INSERT INTO runbook.maintenance_windows (starts_at, ends_at, reason, routes)"
            " VALUES (now() - interval '1 minute', now() + interval '1 hour', 'db upgrade',"
            " '{high-latency}')"
        )
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
        quiet = await post_alert(
            client, generic_alert("HighLatency", labels={"target": incident("mw")})
        )
        stray = await post_alert(
            client,
            {
                **generic_alert("HighErrorRate", labels={"target": incident("gone")}),
                "status": "resolved",
            },
        )
        firing = await post_alert(
            client, generic_alert("HighErrorRate", labels={"target": incident("live")})
        )
    assert quiet.json()["status"] == "suppressed", quiet.text
    assert (stray.json()["status"], stray.json()["incident"]) == ("resolved", None), stray.text
    assert firing.json()["status"] == "new", firing.text
    live, suppressed = firing.json()["incident"], quiet.json()["incident"]

    async def dispatched() -> bool:
        return bool((await flow_runs_by_incident(api_url)).get(live))

    await harness_eventually(dispatched, timeout=90)
    await asyncio.sleep(2.0)  # ten dispatch polls later
    runs = await flow_runs_by_incident(api_url)
    assert runs.get(live) == 1 and suppressed not in runs, runs
    assert "flow" not in await outbox_rows(db, suppressed)
