"""Trust, persisting: long ids, a delivery the database refuses, resolutions by fingerprint."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from intake_harness import (
    IntakeProcess,
    Sender,
    eventually,
    fixture_payload,
    generic_alert,
    unique,
)

from intake.parsers import bounded_id
from runbook import opsdb
from runbook.incidents import IncidentStatus, get_incident

SEND = Sender()


async def post(
    client: httpx.AsyncClient, source: str, payload: Any, extra: dict[str, str] | None = None
) -> httpx.Response:
    path, body, headers = SEND.request(source, payload, extra)
    return await client.post(path, content=body, headers=headers)


# --- 1. delivery ids over 200 bytes are hashed ------------------------------------------------


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("wh-1", "wh-1"),
        ("a" * 200, "a" * 200),
        ("a" * 201, _sha("a" * 201)),
        ("é" * 100, "é" * 100),  # 200 bytes of UTF-8
        ("é" * 101, _sha("é" * 101)),  # 101 characters, but 202 bytes
        ("🔥" * 51, _sha("🔥" * 51)),
    ],
    ids=["empty", "short", "200-ascii", "201-ascii", "200-bytes", "202-bytes", "emoji"],
)
def test_ids_over_200_utf8_bytes_are_hashed(value: str, expected: str) -> None:
    assert bounded_id(value) == expected
    assert len(bounded_id(value).encode()) <= 200


@pytest.mark.integration
async def test_long_delivery_id_is_accepted_hashed_and_its_replay_is_a_duplicate(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    webhook_id = secrets.token_urlsafe(6000)  # ~8 kB: over what one index entry can hold
    payload = fixture_payload("pagerduty_incident_triggered")
    title = f"Database connection pool exhausted {unique()}"
    payload["event"]["data"]["title"] = title
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        first = await post(client, "pagerduty", payload, {"X-Webhook-Id": webhook_id})
        again = await post(client, "pagerduty", payload, {"X-Webhook-Id": webhook_id})
    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert (again.json()["incident"], again.json()["outcome"]) == (
        first.json()["incident"], "duplicate",
    )  # fmt: skip
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT delivery_id FROM runbook.alerts WHERE name = %s", (title,))
        assert await cur.fetchall() == [(_sha(webhook_id),)]  # stored once, hashed


# --- 2. a delivery the database refuses: its own 400, the rest of its batch committed ---------


async def _generic_received(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(r'^intake_deliveries_received_total\{source="generic"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
async def test_refused_delivery_in_a_group_commit_gets_400_and_the_others_are_persisted(
    fresh_db: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    """A column limit the database enforces (here: alerts.summary made varchar(100)) refuses
    one delivery of a batch; the batch's other deliveries are committed and answered 202."""
    conn = await opsdb.connect(fresh_db)
    try:
        await conn.execute("ALTER TABLE runbook.alerts ALTER COLUMN summary TYPE varchar(100)")
    finally:
        await conn.close()
    proc = spawn_intake(
        RUNBOOK_OPS_DATABASE_URL=fresh_db,
        RUNBOOK_INTAKE_DISPATCH="false",
        RUNBOOK_INTAKE_PERSIST_WRITERS="1",
    )
    tag = unique("batch")
    first = generic_alert(f"HighLatency {tag} first", labels={"target": unique()})
    goods = [generic_alert(f"HighLatency {tag} {n}", labels={"target": unique()}) for n in range(8)]
    bad = generic_alert(f"HighLatency {tag} bad", summary="p99 " + "9" * 300)
    async with (
        httpx.AsyncClient(base_url=proc.url, timeout=30) as client,
        await psycopg.AsyncConnection.connect(fresh_db) as blocker,
    ):
        # hold the one writer inside its first commit, so every other delivery queues up and
        # the next group commit holds them all, the bad one included
        await blocker.execute("LOCK TABLE runbook.maintenance_windows IN ACCESS EXCLUSIVE MODE")
        pending = [asyncio.create_task(post(client, "generic", first))]

        async def writer_waits() -> bool:
            cur = await blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        await eventually(writer_waits, timeout=10)
        pending += [asyncio.create_task(post(client, "generic", p)) for p in [*goods, bad]]

        async def all_received() -> bool:
            return await _generic_received(client) >= 1 + len(goods) + 1

        await eventually(all_received, timeout=10)
        await asyncio.sleep(0.2)  # received → queued is a few synchronous steps
        await blocker.rollback()  # release the writer
        answers = await asyncio.gather(*pending)

    *accepted, refused = answers
    assert [a.status_code for a in accepted] == [202] * (1 + len(goods))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "value too long for type character varying(100)" in error
    assert "9999" not in error  # names the problem, does not echo the value
    batches = [int(n) for n in re.findall(r"batch of (\d+) refused", proc.log())]
    assert batches and max(batches) >= 2, "the bad delivery shared a group commit"
    async with await psycopg.AsyncConnection.connect(fresh_db) as conn:
        cur = await conn.execute(
            "SELECT name FROM runbook.alerts WHERE name LIKE %s ORDER BY name", (f"%{tag}%",)
        )
        stored = [r[0] for r in await cur.fetchall()]
    assert stored == sorted(p["name"] for p in [first, *goods])
    assert "Traceback" not in proc.log()


# --- 3. a resolved alert closes only the incident its fingerprint fired into ------------------


def _am_alert(target: str, fingerprint: str, status: str = "firing", **labels: str) -> Any:
    alert = fixture_payload("alertmanager_firing")["alerts"][0]
    alert["labels"].update(alertname="HighErrorRate", target=target, **labels)
    alert.update(status=status, fingerprint=fingerprint)
    return alert


def _am(*alerts: Any) -> dict[str, Any]:
    payload = fixture_payload("alertmanager_firing")
    payload["alerts"] = list(alerts)
    payload["status"] = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return payload


async def _status(pg_url: str, incident: str) -> IncidentStatus:
    conn = await opsdb.connect(pg_url)
    try:
        found = await get_incident(conn, incident)
    finally:
        await conn.close()
    assert found is not None
    return found.status


@pytest.mark.integration
async def test_same_alertname_different_fingerprints_resolving_one_closes_only_its_incident(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    (t1, f1), (t2, f2) = [(unique("t"), unique("fp")) for _ in range(2)]
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        fired = await post(client, "alertmanager", _am(_am_alert(t1, f1), _am_alert(t2, f2)))
        one, two = (a["incident"] for a in fired.json()["alerts"])
        assert [a["status"] for a in fired.json()["alerts"]] == ["new", "new"]
        assert one != two
        resolved = await post(client, "alertmanager", _am(_am_alert(t1, f1, "resolved")))
    assert (resolved.json()["incident"], resolved.json()["status"]) == (one, "resolved")
    assert await _status(pg_url, one) is IncidentStatus.RESOLVED
    assert await _status(pg_url, two) is IncidentStatus.OPEN


@pytest.mark.integration
async def test_incident_stays_open_until_every_fingerprint_its_source_reported_resolves(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    """Two pods of one service fire the same alert: one incident. One pod recovering does not
    close it (nor cancel its remediation) while the other still fires."""
    target, f1, f2 = unique("t"), unique("fp"), unique("fp")
    pod1 = _am_alert(target, f1, instance="pod-1")
    pod2 = _am_alert(target, f2, instance="pod-2")
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        fired = (await post(client, "alertmanager", _am(pod1, pod2))).json()["alerts"]
        assert [a["status"] for a in fired] == ["new", "coalesced"]
        incident = fired[0]["incident"]
        await post(client, "alertmanager", _am({**pod1, "status": "resolved"}))
        assert await _status(pg_url, incident) is IncidentStatus.OPEN
        await post(client, "alertmanager", _am({**pod2, "status": "resolved"}))
        assert await _status(pg_url, incident) is IncidentStatus.RESOLVED


@pytest.mark.integration
async def test_resolution_of_a_fingerprint_that_never_fired_there_closes_nothing(
    intake_server: IntakeProcess, pg_url: str
) -> None:
    target = unique("t")
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        fired = await post(client, "alertmanager", _am(_am_alert(target, unique("fp"))))
        incident = fired.json()["incident"]
        stray = _am_alert(target, unique("fp"), "resolved", instance="elsewhere")
        assert (await post(client, "alertmanager", _am(stray))).status_code == 202
    assert await _status(pg_url, incident) is IncidentStatus.OPEN
