"""Telling customers (status page tasks) and the on-call (PagerDuty severity and resolve).

Against the sandbox's Statuspage manage-API fake and PagerDuty fake over HTTP, and — for the
answers the fake cannot give (420, 500 after a write, a lost answer, an echoed key) — a scripted
HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks import CustomerStatusPage, PagerDuty
from runbook.errors import (
    ConfigurationError,
    NotAuthorized,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
)
from runbook.settings import Settings, get_settings
from sandbox.environment import SECRETS
from sandbox.handle import SandboxHandle
from sandbox.statuspage_manage import StatuspageManage
from tasks import statuspage as sp
from tasks.notify import pagerduty_severity, resolve_pagerduty, send_pagerduty_event

KEY = "sp-test-key-Qm4r7Zx91"
COMPONENTS = {"API": "cmp-api", "Widget": "cmp-widget", "Dashboard": "cmp-dash"}
fake_reads_one_incident = pytest.mark.skipif(
    not hasattr(StatuspageManage, "get"),
    reason="the sandbox fake has no GET /incidents/{id} yet (diff in the change's report)",
)


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# -- a scripted Statuspage ------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0


@dataclass
class Script:
    replies: list[Reply]
    seen: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def scripted(*replies: Reply) -> Iterator[tuple[Script, CustomerStatusPage]]:
    """A server answering `replies` in order, recording every request; a page block on it."""
    script = Script(list(replies))

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": json.loads(raw) if raw else None,
                    "at": time.monotonic(),
                }
            )
            reply = script.replies.pop(0) if script.replies else Reply(599, {"message": "no more"})
            time.sleep(reply.hold_s)
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            try:
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client hung up (a timeout test)

        do_GET = do_POST = do_PATCH = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = CustomerStatusPage(
        url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        api_key=SecretStr(KEY),
        page_id="pg1",
        components=COMPONENTS,
        min_interval_s=0,
    )
    try:
        yield script, page
    finally:
        server.shutdown()
        server.server_close()


def incident(**fields: Any) -> dict[str, Any]:
    return {"id": "inc1", "name": "API down", "status": "investigating", **fields}


@pytest.fixture
def honoured_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Retry waits as in production (the suite makes them zero), so Retry-After is seen."""
    monkeypatch.setenv("RUNBOOK_RETRY_FAST", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# -- the block ------------------------------------------------------------------------------------
def test_customer_status_page_is_built_from_the_statuspage_settings() -> None:
    settings = Settings(
        statuspage_url="https://sp.test/v1",
        statuspage_api_key=SecretStr(KEY),
        statuspage_page_id="pg9",
        statuspage_components=COMPONENTS,
    )
    page = CustomerStatusPage.from_settings(settings)
    assert (page.url, page.page_id, page.components) == ("https://sp.test/v1", "pg9", COMPONENTS)
    assert page.auth_headers() == {"Authorization": f"OAuth {KEY}"}
    assert KEY not in repr(page) + str(page) + page.model_dump_json()


# -- scripted answers -----------------------------------------------------------------------------
async def test_create_sends_oauth_and_components_by_id_and_parses_component_objects() -> None:
    answer = incident(components=[{"id": "cmp-api", "name": "API", "status": "major_outage"}])
    with scripted(Reply(201, answer)) as (script, page):
        created = await sp.create_incident.fn(
            page, "API down", "Investigating", components={"API": "major_outage"}
        )
    sent = script.seen[0]
    assert (sent["method"], sent["path"], sent["auth"]) == (
        "POST",
        "/v1/pages/pg1/incidents",
        f"OAuth {KEY}",
    )
    body = sent["body"]["incident"]
    assert body["components"] == {"cmp-api": "major_outage"}
    assert body["component_ids"] == ["cmp-api"] and body["impact_override"] == "major"
    assert created.components == {"cmp-api": "major_outage"} and created.id == "inc1"


async def test_an_update_sends_component_statuses_without_replacing_the_affected_list() -> None:
    with scripted(Reply(200, incident(status="identified"))) as (script, page):
        await sp.update_incident.fn(page, "inc1", "identified", "Found", {"API": "partial_outage"})
    sent = script.seen[0]
    assert (sent["method"], sent["path"]) == ("PATCH", "/v1/pages/pg1/incidents/inc1")
    assert sent["body"]["incident"]["components"] == {"cmp-api": "partial_outage"}
    assert "component_ids" not in sent["body"]["incident"]


async def test_a_420_is_a_rate_limit_waited_out_per_retry_after_then_sent_again(
    honoured_waits: None,
) -> None:
    refused = Reply(420, {"message": "Enhance your calm"}, {"Retry-After": "1"})
    with scripted(refused, Reply(201, incident())) as (script, page):
        created = await sp.create_incident.fn(page, "API down", "Investigating")
    assert created.id == "inc1"
    assert len(script.seen) == 2, "refused by the rate limit, so nothing happened: sent again"
    assert script.seen[1]["at"] - script.seen[0]["at"] >= 0.9, "Retry-After: 1 was honoured"


async def test_a_create_rate_limited_twice_gives_up_as_rate_limited_not_unknown() -> None:
    limited = Reply(429, {"message": "Rate limit exceeded"}, {"Retry-After": "0"})
    with scripted(limited, limited) as (script, page), pytest.raises(RateLimited):
        await sp.create_incident.fn(page, "API down", "Investigating")
    assert len(script.seen) == 2


async def test_a_create_answered_500_is_outcome_unknown_and_sent_once() -> None:
    with scripted(Reply(500, {"message": "oops"})) as (script, page), pytest.raises(OutcomeUnknown):
        await sp.create_incident.fn(page, "API down", "Investigating")
    assert len(script.seen) == 1, "a write whose answer was lost is never re-sent blind"


async def test_an_update_whose_answer_never_comes_is_outcome_unknown_and_sent_once() -> None:
    with scripted(Reply(200, incident(), hold_s=2.0)) as (script, page):
        impatient = page.model_copy(update={"timeout_s": 0.3})
        with pytest.raises(OutcomeUnknown):
            await sp.update_incident.fn(impatient, "inc1", "identified", "Found it")
    assert len(script.seen) == 1


async def test_a_read_answered_503_is_retried() -> None:
    with scripted(Reply(503), Reply(200, incident(status="monitoring"))) as (script, page):
        found = await sp.get_incident.fn(page, "inc1")
    assert found.status == "monitoring" and len(script.seen) == 2


async def test_a_message_error_is_permanent_with_the_message_and_not_retried() -> None:
    blank = Reply(422, {"message": "name can't be blank"})
    with scripted(blank) as (script, page), pytest.raises(PermanentError, match="can't be blank"):
        await sp.create_incident.fn(page, "x", "body")
    assert len(script.seen) == 1


async def test_a_refusal_that_echoes_the_api_key_is_masked() -> None:
    echo = Reply(401, {"message": f"token {KEY} is invalid"})
    with scripted(echo) as (_, page), pytest.raises(NotAuthorized) as caught:
        await sp.create_incident.fn(page, "API down", "Investigating")
    assert KEY not in str(caught.value) and "is invalid" in str(caught.value)


async def test_maintenance_is_sent_in_utc_iso_8601_with_remind_and_auto_flags() -> None:
    start = datetime(2030, 6, 2, 4, 0, tzinfo=timezone(timedelta(hours=2)))  # 02:00 UTC
    with scripted(Reply(201, incident(status="scheduled"))) as (script, page):
        await sp.schedule_maintenance.fn(
            page, "Sunday maintenance", "Upgrades", start, start + timedelta(hours=2), ["API"]
        )
    body = script.seen[0]["body"]["incident"]
    assert (body["status"], body["scheduled_for"], body["scheduled_until"]) == (
        "scheduled",
        "2030-06-02T02:00:00Z",
        "2030-06-02T04:00:00Z",
    )
    assert body["scheduled_remind_prior"] and body["scheduled_auto_in_progress"]
    assert body["scheduled_auto_completed"] and body["component_ids"] == ["cmp-api"]
    assert "components" not in body, "components change state when the window starts, not now"


async def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    naive = datetime(2030, 6, 2, 2, 0)
    with scripted() as (script, page):
        with pytest.raises(PermanentError, match="timezone-aware"):
            await sp.schedule_maintenance.fn(page, "m", "b", naive, naive + timedelta(hours=2))
        with pytest.raises(ConfigurationError, match="unknown component 'Billing'"):
            await sp.create_incident.fn(page, "n", "b", components={"Billing": "major_outage"})
        with pytest.raises(ConfigurationError, match="no API key"):
            await sp.get_incident.fn(page.model_copy(update={"api_key": SecretStr("")}), "i")
    assert script.seen == []


async def test_requests_with_one_key_are_paced_min_interval_apart() -> None:
    with scripted(Reply(200, incident()), Reply(200, incident())) as (script, page):
        paced = page.model_copy(update={"min_interval_s": 0.5})
        await sp.get_incident.fn(paced, "inc1")
        await sp.get_incident.fn(paced, "inc1")
    assert script.seen[1]["at"] - script.seen[0]["at"] >= 0.5


# -- against the sandbox's Statuspage fake --------------------------------------------------------
@pytest.fixture
def page(platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> CustomerStatusPage:
    for name, value in platform_env.extra_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNBOOK_STATUSPAGE_COMPONENTS", json.dumps(COMPONENTS))
    get_settings.cache_clear()
    return CustomerStatusPage.from_settings(get_settings())


def told(sb: SandboxHandle, incident_id: str) -> list[dict[str, Any]]:
    """What customers were told about one incident, in order."""
    return [e for e in sb.sink("statuspage") if e["id"] == incident_id]


@pytest.mark.integration
async def test_incident_round_trip_ends_with_every_component_operational(
    platform_env: SandboxHandle, page: CustomerStatusPage
) -> None:
    name = unique("API errors")
    hit = {"API": "major_outage", "Widget": "partial_outage"}
    created = await sp.create_incident.fn(page, name, "We are investigating", components=hit)
    assert created.status == "investigating"
    assert created.components == {"cmp-api": "major_outage", "cmp-widget": "partial_outage"}
    updated = await sp.update_incident.fn(
        page, created.id, "identified", "Rolled back", components={"API": "degraded_performance"}
    )
    assert updated.status == "identified"
    resolved = await sp.resolve_incident.fn(page, created.id, "All good", components=hit)
    assert resolved.closed
    assert resolved.components == {"cmp-api": "operational", "cmp-widget": "operational"}

    (listed,) = await sp.list_incidents.fn(page, name=name)
    assert listed.status == "resolved" and set(listed.components.values()) == {"operational"}
    steps = told(platform_env, created.id)
    assert [(e["action"], e["status"]) for e in steps] == [
        ("create", "investigating"),
        ("update", "identified"),
        ("update", "resolved"),
    ]
    assert steps[-1]["components"] == {"cmp-api": "operational", "cmp-widget": "operational"}


@pytest.mark.integration
@fake_reads_one_incident
async def test_resolve_without_a_list_restores_each_component_the_incident_lists(
    platform_env: SandboxHandle, page: CustomerStatusPage
) -> None:
    hit = {"API": "major_outage", "Widget": "partial_outage"}
    created = await sp.create_incident.fn(page, unique("Widget"), "Investigating", components=hit)
    await sp.update_incident.fn(page, created.id, "monitoring", "Fix out", {"API": "operational"})
    await sp.resolve_incident.fn(page, created.id, "Resolved")
    seen = await sp.get_incident.fn(page, created.id)
    assert seen.status == "resolved"
    assert told(platform_env, created.id)[-1]["components"] == {
        "cmp-api": "operational",
        "cmp-widget": "operational",
    }


@pytest.mark.integration
async def test_a_wrong_api_key_is_not_authorized_and_the_message_has_no_key(
    platform_env: SandboxHandle, page: CustomerStatusPage
) -> None:
    wrong = "sp-wrong-key-8Hq2Lw0p"
    before = len(platform_env.sink("statuspage"))
    with pytest.raises(NotAuthorized) as caught:
        await sp.create_incident.fn(
            page.model_copy(update={"api_key": SecretStr(wrong)}), unique("x"), "y"
        )
    text = str(caught.value)
    assert wrong not in text and SECRETS["statuspage_api_key"] not in text
    assert "Could not authenticate" in text
    assert len(platform_env.sink("statuspage")) == before, "nothing was posted"


@pytest.mark.integration
async def test_a_create_refused_with_429_is_sent_again_and_creates_one_incident(
    platform_env: SandboxHandle, page: CustomerStatusPage
) -> None:
    name = unique("Rate limited")
    # another client with the same key uses this second's request: ours gets a 429 first
    httpx.get(f"{page.url}/pages/{page.page_id}/incidents", headers=page.auth_headers())
    created = await sp.create_incident.fn(page, name, "Investigating")
    assert [e["id"] for e in platform_env.sink("statuspage") if e.get("name") == name] == [
        created.id
    ]


@pytest.mark.integration
async def test_maintenance_notice_is_scheduled_on_the_page(
    platform_env: SandboxHandle, page: CustomerStatusPage
) -> None:
    start = datetime(2030, 6, 2, 2, 0, tzinfo=UTC)
    window = await sp.schedule_maintenance.fn(
        page, unique("Maintenance"), "Upgrades", start, start + timedelta(hours=2), ["API"]
    )
    assert window.status == "scheduled" and window.component_ids == ("cmp-api",)
    (entry,) = told(platform_env, window.id)
    assert (entry["impact"], entry["scheduled_for"]) == ("maintenance", "2030-06-02T02:00:00Z")


# -- PagerDuty: severity and resolve --------------------------------------------------------------
@pytest.mark.parametrize(
    ("incident_severity", "expected"),
    [
        ("P1", "critical"),
        ("p2", "error"),
        ("P3", "warning"),
        ("P5", "warning"),
        ("SEV-2", "error"),
        ("critical", "critical"),
        ("error", "error"),
        ("warning", "warning"),
        ("info", "info"),
        ("high", "error"),
        ("no-such-level", "critical"),
    ],
)
def test_pagerduty_severity_of_an_incident(incident_severity: str, expected: str) -> None:
    assert pagerduty_severity(incident_severity) == expected


@pytest.mark.integration
async def test_a_p2_incident_pages_error_and_its_resolve_uses_the_same_dedup_key(
    platform_env: SandboxHandle,
) -> None:
    pagerduty = PagerDuty.from_settings(get_settings())
    incident_id = f"inc-{uuid.uuid4().hex[:10]}"
    sent = await send_pagerduty_event.fn(
        pagerduty, "API errors above 1%", dedup_key=incident_id, severity="P2"
    )
    closed = await resolve_pagerduty.fn(pagerduty, incident_id)
    assert sent.accepted and closed.accepted and closed.dedup_key == incident_id
    events = [e for e in platform_env.sink("pagerduty") if e["dedup_key"] == incident_id]
    assert [(e["event_action"], e["payload"].get("severity")) for e in events] == [
        ("trigger", "error"),
        ("resolve", None),
    ]
    assert events[1]["payload"] == {}, "a resolve carries no payload"
