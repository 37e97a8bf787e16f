"""Trust, telling a human: escaped Slack text, a flow that cannot start is triaged and paged
(durably), and /metrics shows how long the oldest undispatched action has waited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from intake_harness import (
    IntakeProcess,
    Sender,
    Sink,
    eventually,
    flow_runs_by_incident,
    generic_alert,
    metric,
    unique,
)

from sandbox.local.prefect_server import free_port

pytestmark = pytest.mark.integration

SEND = Sender()
ROUTING_KEY = "pd-routing-key-0c7a41e9b2d84f16a3"
HOSTILE = "<!channel> deploy & <http://x|y>"
HOSTILE_ESCAPED = "&lt;!channel&gt; deploy &amp; &lt;http://x|y&gt;"


async def post(client: httpx.AsyncClient, source: str, payload: Any) -> httpx.Response:
    path, body, headers = SEND.request(source, payload)
    return await client.post(path, content=body, headers=headers)


async def outbox(url: str, incident_id: str) -> dict[str, tuple[Any, ...]]:
    """action → (done, result, attempts)"""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT action, done_at IS NOT NULL, result, attempts FROM runbook.outbox"
            " WHERE incident_id = %s",
            (incident_id,),
        )
        return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


def notify_env(slack: Sink, pagerduty: Sink) -> dict[str, str]:
    return {
        "RUNBOOK_SLACK_WEBHOOK_URL": slack.url,
        "RUNBOOK_PAGERDUTY_EVENTS_URL": pagerduty.url,
        "RUNBOOK_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        # no block document of that name: the channels come from the environment above
        "RUNBOOK_ENVIRONMENT": unique("env"),
    }


# --- 4. alert text reaches Slack escaped -----------------------------------------------------


async def test_alert_text_reaches_slack_escaped_no_mention_or_link(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    with Sink("slack") as slack, Sink("pagerduty") as pagerduty:
        proc = spawn_intake(
            PREFECT_API_URL=deployed,
            RUNBOOK_OPS_DATABASE_URL=fresh_db,
            **notify_env(slack, pagerduty),
        )
        alert = generic_alert(
            HOSTILE,
            summary="ask <@U123ABC> or <!here>",
            labels={"target": "<!everyone>"},
        )
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            answer = (await post(client, "generic", alert)).json()
        assert (answer["route"], answer["status"]) == ("triage", "triaged")

        async def notified() -> bool:
            return bool(slack.received)

        await eventually(notified, timeout=15)
    text = slack.received[0]["text"]
    assert HOSTILE_ESCAPED in text
    assert "ask &lt;@U123ABC&gt; or &lt;!here&gt;" in text
    assert "on &lt;!everyone&gt;" in text
    assert "<" not in text and ">" not in text  # no mention, broadcast or link survives
    assert answer["incident"] in text


# --- 6. a flow whose deployment does not exist: finished, triaged to Slack, paged -------------


async def test_missing_deployment_is_finished_triaged_to_slack_and_paged(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    absent = unique("absent")  # no flow has a deployment of this name
    with Sink("slack") as slack, Sink("pagerduty") as pagerduty:
        proc = spawn_intake(
            PREFECT_API_URL=deployed,
            RUNBOOK_OPS_DATABASE_URL=fresh_db,
            RUNBOOK_DEPLOYMENT_NAME=absent,
            **notify_env(slack, pagerduty),
        )
        alert = generic_alert("HighLatency", summary=f"p99 12s after {HOSTILE}")
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            answer = (await post(client, "generic", alert)).json()
        assert (answer["route"], answer["status"]) == ("high-latency", "new")
        incident = answer["incident"]

        async def told() -> bool:
            return bool(slack.received and pagerduty.received)

        await eventually(told, timeout=15)
        rows = await outbox(fresh_db, incident)
    deployment = f"high-latency/{absent}"
    assert rows == {
        "flow": (True, f"failed: no deployment {deployment}", 1),  # finished: never retried
        "slack": (True, "slack ok", 1),
        "page": (True, "pagerduty ok", 1),
    }
    [message] = slack.received
    assert f"no deployment {deployment}" in message["text"]
    assert f"p99 12s after {HOSTILE_ESCAPED}" in message["text"]
    assert "<!channel>" not in message["text"]
    assert incident in message["text"]
    [event] = pagerduty.received
    assert (event["routing_key"], event["event_action"], event["dedup_key"]) == (
        ROUTING_KEY, "trigger", incident,
    )  # fmt: skip
    assert f"no deployment {deployment}" in event["payload"]["summary"]
    assert event["payload"]["severity"] == "critical"
    assert incident not in await flow_runs_by_incident(deployed)
    log = proc.log()
    assert ROUTING_KEY not in log and urlsplit(slack.url).path not in log
    assert "Traceback" not in log


async def test_triage_and_page_of_a_missing_deployment_survive_an_intake_restart(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """Slack and PagerDuty are down when the flow fails to start; the intake is killed; the next
    intake process (same database) still sends both."""
    with Sink("slack", status=503) as slack, Sink("pagerduty", status=503) as pagerduty:
        env = {
            "PREFECT_API_URL": deployed,
            "RUNBOOK_OPS_DATABASE_URL": fresh_db,
            "RUNBOOK_DEPLOYMENT_NAME": unique("absent"),
            **notify_env(slack, pagerduty),
        }
        first = spawn_intake(**env)
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
            incident = (await post(client, "generic", generic_alert("HighLatency"))).json()[
                "incident"
            ]

        async def both_tried() -> bool:
            rows = await outbox(fresh_db, incident)
            return all(rows.get(a, (False, None, 0))[2] >= 1 for a in ("slack", "page"))

        await eventually(both_tried, timeout=15)
        first.kill()
        rows = await outbox(fresh_db, incident)
        assert rows["flow"][0] and not rows["slack"][0] and not rows["page"][0]
        assert not slack.received and not pagerduty.received

        slack.status, pagerduty.status = 200, 202
        spawn_intake(**env)

        async def told() -> bool:
            return bool(slack.received and pagerduty.received)

        await eventually(told, timeout=15)
    rows = await outbox(fresh_db, incident)
    assert (rows["slack"][:2], rows["page"][:2]) == ((True, "slack ok"), (True, "pagerduty ok"))
    assert pagerduty.received[0]["dedup_key"] == incident


# --- 7. /metrics: age of the oldest undispatched action ---------------------------------------

GAUGE = "runbook_intake_oldest_undispatched_seconds"


@contextlib.asynccontextmanager
async def forwarder(port: int, to: str) -> AsyncIterator[None]:
    """A TCP relay 127.0.0.1:port → `to` (the Prefect API comes back on the same address)."""
    target = urlsplit(to)
    host, target_port = target.hostname or "127.0.0.1", target.port or 80

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_oldest_undispatched_age_grows_while_prefect_is_down_then_returns_to_zero(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    port = free_port()  # nothing listens here until the relay starts: Prefect is unreachable
    proc = spawn_intake(
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api", RUNBOOK_OPS_DATABASE_URL=fresh_db
    )
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:

        async def gauge() -> float:
            return metric((await client.get("/metrics")).text, GAUGE)

        assert await gauge() == 0.0  # nothing waiting
        answer = (await post(client, "generic", generic_alert("HighLatency"))).json()
        assert answer["status"] == "new"

        async def waiting() -> bool:
            return await gauge() >= 1.0

        await eventually(waiting, timeout=15)
        async with forwarder(port, deployed):

            async def dispatched() -> bool:
                return await gauge() == 0.0

            await eventually(dispatched, timeout=20)
            assert (await flow_runs_by_incident(deployed)).get(answer["incident"]) == 1
