"""Durable dispatch: storms, Prefect outages, crashes — exactly one flow run per incident."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from intake_harness import (
    DEPLOYMENT,
    IntakeProcess,
    Sender,
    eventually,
    fixture_payload,
    flow_run_of,
    flow_runs_by_incident,
    generic_alert,
    register_route_deployments,
    unique,
)

from runbook import opsdb
from runbook.incidents import IncidentStatus, get_incident
from sandbox.local.prefect_server import LocalPrefectServer, free_port

pytestmark = pytest.mark.integration

SEND = Sender()


async def post(client: httpx.AsyncClient, source: str, payload: Any) -> httpx.Response:
    path, body, headers = SEND.request(source, payload)
    return await client.post(path, content=body, headers=headers)


def alertmanager_for(target: str, status: str = "firing") -> dict[str, Any]:
    payload = fixture_payload("alertmanager_firing")
    payload["status"] = status
    for alert in payload["alerts"]:
        alert["status"] = status
        alert["labels"]["target"] = target
    return payload


@contextlib.contextmanager
def slack_hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A Slack incoming-webhook stand-in on 127.0.0.1: (base URL, the JSON bodies received)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


async def outbox(url: str, incident_id: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT action, done_at IS NOT NULL, result, attempts FROM runbook.outbox"
            " WHERE incident_id = %s",
            (incident_id,),
        )
        return list(await cur.fetchall())


async def test_storm_2000_deliveries_10_incidents_exactly_10_runs(
    deployed: str,
    intake_server: IntakeProcess,
    spawn_intake: Callable[..., IntakeProcess],
    pg_url: str,
) -> None:
    """Alertmanager resends and generic duplicates of 10 problems, interleaved over 20
    connections to two intake copies (a third, the shared one, also dispatches)."""
    second = spawn_intake(PREFECT_API_URL=deployed)
    targets = [unique("storm") for _ in range(10)]
    deliveries: list[tuple[str, dict[str, Any]]] = []
    for n in range(2000):
        target = targets[(n // 2) % 10]  # every problem reported by both sources, interleaved
        if n % 2:
            deliveries.append(("alertmanager", alertmanager_for(target)))
        else:
            name = "HighErrorRate" if n % 4 else "ErrorRateCritical"
            deliveries.append(("generic", generic_alert(name, labels={"target": target})))
    answers: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    async with (
        httpx.AsyncClient(base_url=intake_server.url, timeout=30, limits=limits) as a,
        httpx.AsyncClient(base_url=second.url, timeout=30, limits=limits) as b,
    ):
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for item in deliveries:
            queue.put_nowait(item)

        async def connection(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                source, payload = queue.get_nowait()
                answers.append(await post(client, source, payload))

        await asyncio.gather(*(connection(c) for c in [a, b] * 10))

    assert [r.status_code for r in answers] == [202] * 2000
    incidents = {r.json()["incident"] for r in answers}
    assert len(incidents) == 10
    assert sorted(r.json()["status"] for r in answers).count("new") == 10

    async def all_dispatched() -> bool:
        runs = await flow_runs_by_incident(deployed)
        return all(runs.get(i) for i in incidents)

    await eventually(all_dispatched, timeout=30)
    await asyncio.sleep(1.0)  # several dispatch polls later: still one run each
    runs = await flow_runs_by_incident(deployed)
    assert {i: runs.get(i) for i in incidents} == dict.fromkeys(incidents, 1)
    conn = await opsdb.connect(pg_url)
    try:
        counted = [await get_incident(conn, i) for i in incidents]
    finally:
        await conn.close()
    assert sum(i.alert_count for i in counted if i) == 2000
    assert all(i and set(i.sources) == {"alertmanager", "generic"} for i in counted)


async def test_prefect_down_then_up_dispatches_each_incident_once(
    fresh_db: str, spawn_intake: Callable[..., IntakeProcess], tmp_path: Path
) -> None:
    server = LocalPrefectServer(tmp_path / "prefect", port=free_port(), ui=False)
    server.start()
    try:
        await register_route_deployments(server.api_url)
        proc = spawn_intake(PREFECT_API_URL=server.api_url, RUNBOOK_OPS_DATABASE_URL=fresh_db)
        server.stop()

        names = ["HighErrorRate", "HighLatency", "OpenAIErrors", "PostgresqlDown", "ApiDown"]
        incidents: set[str] = set()
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            for name, _ in itertools.product(names, range(3)):
                response = await post(client, "generic", generic_alert(name))
                assert response.status_code == 202
                incidents.add(response.json()["incident"])
            # one problem that fires and resolves while Prefect is down: never remediated
            gone = generic_alert("SlowResponses", summary="slow responses", labels={"target": "x"})
            fired = await post(client, "generic", gone)
            resolved = await post(client, "generic", {**gone, "status": "resolved"})
            assert resolved.json()["status"] == "resolved"
            assert resolved.json()["incident"] == fired.json()["incident"]

            async def all_tried() -> bool:  # the dispatcher tries, fails and backs off
                rows = [await outbox(fresh_db, i) for i in incidents]
                return all(r and r[0][3] >= 1 for r in rows)

            await eventually(all_tried, timeout=20)
            metrics = (await client.get("/metrics")).text
        assert len(incidents) == 5
        assert 'intake_dispatch_failures_total{action="flow"}' in metrics
        for incident in incidents:
            [(action, done, _, _)] = await outbox(fresh_db, incident)
            assert (action, done) == ("flow", False)

        server.start()  # same port, same database

        async def all_dispatched() -> bool:
            runs = await flow_runs_by_incident(server.api_url)
            return all(runs.get(i) for i in incidents)

        await eventually(all_dispatched, timeout=30)
        await asyncio.sleep(1.0)
        runs = await flow_runs_by_incident(server.api_url)
        assert runs == dict.fromkeys(incidents, 1)  # the resolved one has none
        [cancelled] = await outbox(fresh_db, fired.json()["incident"])
        assert cancelled[:3] == ("flow", True, "cancelled")
    finally:
        server.stop()


async def test_sigkill_after_202_still_dispatched_once(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api"  # this copy cannot dispatch before it dies
    first = spawn_intake(PREFECT_API_URL=nowhere, RUNBOOK_OPS_DATABASE_URL=fresh_db)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        response = await post(client, "generic", generic_alert("HighLatency", summary="p99 12s"))
    assert response.status_code == 202
    incident = response.json()["incident"]
    first.kill()
    [(action, done, _, _)] = await outbox(fresh_db, incident)
    assert (action, done) == ("flow", False)

    spawn_intake(PREFECT_API_URL=deployed, RUNBOOK_OPS_DATABASE_URL=fresh_db)

    async def dispatched() -> bool:
        return bool((await flow_runs_by_incident(deployed)).get(incident))

    await eventually(dispatched, timeout=20)
    await asyncio.sleep(1.0)
    assert (await flow_runs_by_incident(deployed))[incident] == 1
    [(_, done, result, _)] = await outbox(fresh_db, incident)
    assert done and result
    assert await flow_run_of(deployed, incident) == (
        "high-latency", DEPLOYMENT, {"incident_id": incident},
    )  # fmt: skip


async def test_sigkill_during_dispatch_storm_then_restart_runs_each_once(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """Killed while dispatching against a live Prefect: restart finishes, nothing doubles."""
    first = spawn_intake(PREFECT_API_URL=deployed, RUNBOOK_OPS_DATABASE_URL=fresh_db)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        answers = [
            await post(client, "generic", generic_alert("HighLatency", labels={"target": unique()}))
            for _ in range(8)
        ]
    first.kill()
    incidents = {r.json()["incident"] for r in answers}
    spawn_intake(PREFECT_API_URL=deployed, RUNBOOK_OPS_DATABASE_URL=fresh_db)

    async def all_dispatched() -> bool:
        runs = await flow_runs_by_incident(deployed)
        return all(runs.get(i) for i in incidents)

    await eventually(all_dispatched, timeout=20)
    runs = await flow_runs_by_incident(deployed)
    assert {i: runs[i] for i in incidents} == dict.fromkeys(incidents, 1)


async def test_resolved_closes_incident_without_run(
    deployed: str, intake_server: IntakeProcess, pg_url: str
) -> None:
    target = unique()
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        fired = await post(client, "alertmanager", alertmanager_for(target))
        incident = fired.json()["incident"]

        async def dispatched() -> bool:
            return bool((await flow_runs_by_incident(deployed)).get(incident))

        await eventually(dispatched)
        resolved = await post(client, "alertmanager", alertmanager_for(target, "resolved"))
        assert resolved.status_code == 202
        assert (resolved.json()["incident"], resolved.json()["status"]) == (incident, "resolved")
        # a resolved alert for a problem nobody saw firing: recorded, nothing started
        stray = await post(client, "alertmanager", alertmanager_for(unique(), "resolved"))
        assert (stray.json()["incident"], stray.json()["status"]) == (None, "resolved")
    await asyncio.sleep(1.0)
    runs = await flow_runs_by_incident(deployed)
    assert runs[incident] == 1
    conn = await opsdb.connect(pg_url)
    try:
        closed = await get_incident(conn, incident)
    finally:
        await conn.close()
    assert closed is not None
    assert closed.status is IncidentStatus.RESOLVED
    assert (closed.resolved_by, closed.resolved_count, closed.alert_count) == ("alertmanager", 1, 1)


async def test_firing_after_cooldown_opens_new_incident_flap_within_reopens(
    deployed: str, intake_server: IntakeProcess
) -> None:
    """RUNBOOK_INTAKE_COOLDOWN_S=2 for the test intake."""
    target = unique()
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        first = (await post(client, "alertmanager", alertmanager_for(target))).json()
        await post(client, "alertmanager", alertmanager_for(target, "resolved"))
        flap = (await post(client, "alertmanager", alertmanager_for(target))).json()
        assert (flap["incident"], flap["status"], flap["outcome"]) == (
            first["incident"], "coalesced", "reopened",
        )  # fmt: skip
        await post(client, "alertmanager", alertmanager_for(target, "resolved"))
        await asyncio.sleep(2.2)
        later = (await post(client, "alertmanager", alertmanager_for(target))).json()
    assert later["status"] == "new"
    assert later["incident"] != first["incident"]

    async def both_dispatched() -> bool:
        runs = await flow_runs_by_incident(deployed)
        return bool(runs.get(first["incident"]) and runs.get(later["incident"]))

    await eventually(both_dispatched)
    runs = await flow_runs_by_incident(deployed)
    assert (runs[first["incident"]], runs[later["incident"]]) == (1, 1)


async def test_duplicates_from_several_sources_attach_to_one_incident(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    target = unique()
    grafana = fixture_payload("grafana_firing")
    for alert in grafana["alerts"]:
        alert["labels"].update(target=target, alertname="API error rate")
        alert["annotations"]["summary"] = "5xx error rate 3%"
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        answers = [
            await post(client, "alertmanager", alertmanager_for(target)),
            await post(client, "alertmanager", alertmanager_for(target)),  # the HA twin
            await post(client, "grafana", grafana),
            await post(client, "generic", generic_alert("ErrorRate", labels={"target": target})),
        ]
    assert [a.json()["status"] for a in answers] == ["new", "coalesced", "coalesced", "coalesced"]
    assert len({a.json()["incident"] for a in answers}) == 1
    conn = await opsdb.connect(pg_url)
    try:
        incident = await get_incident(conn, answers[0].json()["incident"])
    finally:
        await conn.close()
    assert incident is not None
    assert (incident.route, incident.target, incident.alert_count) == ("high-error-rate", target, 4)
    assert set(incident.sources) == {"alertmanager", "grafana", "generic"}
    assert "| firing alerts attached | 4 |" in incident.to_markdown()


async def test_maintenance_window_suppresses_except_complete_outage(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    target = unique()
    latency = generic_alert("HighLatency", summary="p99 12s", labels={"target": target})
    outage = generic_alert("CompleteOutage", summary="all health checks failing",
                           labels={"target": target})  # fmt: skip
    conn = await opsdb.connect(pg_url)
    try:
        cur = await conn.execute(
            "INSERT INTO runbook.maintenance_windows (starts_at, ends_at, reason, routes)"
            " VALUES (now() - interval '1 minute', now() + interval '1 hour', 'db upgrade',"
            " NULL) RETURNING id"
        )
        row = await cur.fetchone()
        assert row is not None
        try:
            async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
                first = (await post(client, "generic", latency)).json()
                second = (await post(client, "generic", latency)).json()
                loud = (await post(client, "generic", outage)).json()
        finally:
            await conn.execute("DELETE FROM runbook.maintenance_windows WHERE id = %s", row)
        assert (first["status"], second["status"]) == ("suppressed", "suppressed")
        assert first["incident"] == second["incident"]
        assert loud["status"] == "new"  # complete outage is never suppressed
        suppressed = await get_incident(conn, first["incident"])
        assert suppressed is not None and suppressed.status is IncidentStatus.SUPPRESSED
        assert suppressed.maintenance_window_id == row[0]
        # the window is over and the problem is still there: remediate it now
        async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
            after = (await post(client, "generic", latency)).json()
        assert (after["incident"], after["status"]) == (first["incident"], "new")
    finally:
        await conn.close()


async def test_unmatched_alert_opens_triage_incident_and_notifies_slack(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    with slack_hook() as (url, received):
        hook_url = url + "/services/T000/B000/XXXX"
        proc = spawn_intake(
            PREFECT_API_URL=deployed,
            RUNBOOK_OPS_DATABASE_URL=fresh_db,
            RUNBOOK_SLACK_WEBHOOK_URL=hook_url,
        )
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            unmatched = fixture_payload("generic_unmatched")
            answers = [(await post(client, "generic", unmatched)).json() for _ in range(3)]
        assert [a["status"] for a in answers] == ["triaged", "coalesced", "coalesced"]
        assert answers[0]["route"] == "triage"

        async def notified() -> bool:
            return bool(received)

        await eventually(notified, timeout=15)
        await asyncio.sleep(0.8)
        assert len(received) == 1
        assert "AutomationRateLow" in received[0]["text"]
        assert answers[0]["incident"] in received[0]["text"]
        assert "B000/XXXX" not in proc.log()  # the webhook URL is a secret
        assert answers[0]["incident"] not in await flow_runs_by_incident(deployed)


async def test_a_flap_after_the_flow_ran_reopens_without_a_second_run_and_tells_a_human(
    deployed: str, fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """Resolved, then firing again within the cool-down after its run: the runbook does not run
    the flow twice (a flap), but the problem is back — Slack hears it and on-call is paged."""
    with slack_hook() as (url, received):
        proc = spawn_intake(
            PREFECT_API_URL=deployed,
            RUNBOOK_OPS_DATABASE_URL=fresh_db,
            RUNBOOK_SLACK_WEBHOOK_URL=url + "/hook",
            RUNBOOK_INTAKE_COOLDOWN_S="300",
        )
        target = unique()
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            first = (await post(client, "alertmanager", alertmanager_for(target))).json()
            incident = first["incident"]

            async def ran() -> bool:
                rows = await outbox(fresh_db, incident)
                return any(r[0] == "flow" and r[1] and r[2] != "cancelled" for r in rows)

            await eventually(ran, timeout=60)
            await post(client, "alertmanager", alertmanager_for(target, "resolved"))
            again = (await post(client, "alertmanager", alertmanager_for(target))).json()
        assert (again["incident"], again["outcome"]) == (incident, "reopened")

        async def told() -> bool:
            return any("Back again" in str(m.get("text")) for m in received)

        await eventually(told, timeout=60)
        text = next(str(m["text"]) for m in received if "Back again" in str(m.get("text")))
        assert incident in text and "reopened #1" in text and "not run twice" in text
        rows = {r[0]: r for r in await outbox(fresh_db, incident)}
        assert rows["page"][2] is not None or rows["page"][3] > 0, "the page was attempted"
        assert (await flow_runs_by_incident(deployed))[incident] == 1, "no second run"
