"""Operating intake: the database going away (503, never a 5xx for client input), the routing
table overridden by a Prefect Block, the `runbook intake` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from intake_harness import IntakeProcess, Sender, generic_alert, unique

from intake.routes_block import IntakeRoutes
from sandbox.local.prefect_server import free_port

pytestmark = pytest.mark.integration

SEND = Sender()


async def test_database_unavailable_is_503_with_retry_after(
    fresh_db: str, pg_url: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    proc = spawn_intake(RUNBOOK_OPS_DATABASE_URL=fresh_db, RUNBOOK_INTAKE_DISPATCH="false")
    path, body, headers = SEND.request("generic", generic_alert("HighLatency"))
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
        assert (await client.post(path, content=body, headers=headers)).status_code == 202
        name = fresh_db.rsplit("/", 1)[1]
        with psycopg.connect(pg_url, autocommit=True) as conn:  # the ops database is gone
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for _ in range(2):  # the broken pooled connection, then no connection at all
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert response.json() == {"error": "cannot persist the alert now; retry"}
        assert (await client.get("/healthz")).status_code == 503
        # what the client sent wrong is still its own fault, database or not
        assert (await client.post(path, content=b"{", headers=headers)).status_code == 401
    assert "Traceback" not in proc.log()


async def test_intake_starts_without_its_database_answers_503_then_accepts_once_it_is_back(
    pg_url: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    name = f"runbook_intake_late_{os.getpid()}_{int(time.time())}"
    late_url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    proc = spawn_intake(
        ready=503, RUNBOOK_OPS_DATABASE_URL=late_url, RUNBOOK_INTAKE_DISPATCH="false"
    )
    path, body, headers = SEND.request("generic", generic_alert("HighLatency"))
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert health.json() == {"status": "degraded", "database": "unreachable"}
            refused = await client.post(path, content=body, headers=headers)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            with psycopg.connect(pg_url, autocommit=True) as conn:  # the database comes up
                conn.execute(f'CREATE DATABASE "{name}"')
            deadline = time.monotonic() + 30
            while (await client.get("/healthz")).status_code != 200:
                assert time.monotonic() < deadline, "intake never reconnected"
                await asyncio.sleep(0.2)
            accepted = await client.post(path, content=body, headers=headers)
            assert accepted.status_code == 202, accepted.text
        with psycopg.connect(late_url) as conn:
            count = conn.execute("SELECT count(*) FROM runbook.incidents").fetchone()
        assert count == (1,), "the retried delivery is persisted"
        assert "Traceback" not in proc.log()
    finally:
        proc.stop()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_routing_table_overridden_by_block(
    deployed: str, spawn_intake: Callable[..., IntakeProcess]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    table = (
        "routes:\n"
        "  - name: disk-space\n"
        "    flow: high-latency\n"
        "    target: nodes\n"
        "    match: [{text: 'disk'}]\n"
        "fallback: {name: triage, notify: [slack], group_by: [alertname]}\n"
    )
    name = unique("routes")
    with temporary_settings(updates={PREFECT_API_URL: deployed}):
        await IntakeRoutes(table=table).asave(name, overwrite=True)
    proc = spawn_intake(
        PREFECT_API_URL=deployed,
        RUNBOOK_INTAKE_ROUTES_BLOCK=name,
        RUNBOOK_INTAKE_DISPATCH="false",
    )
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
        for alert, expected in [("DiskAlmostFull", "disk-space"), ("HighErrorRate", "triage")]:
            path, body, headers = SEND.request(
                "generic", generic_alert(alert, labels={"environment": unique()})
            )
            response = await client.post(path, content=body, headers=headers)
            assert response.json()["route"] == expected


def test_runbook_intake_command_serves_on_given_port(intake_env: dict[str, str]) -> None:
    port = free_port()
    runbook = os.path.join(os.path.dirname(sys.executable), "runbook")
    env = {**intake_env, "RUNBOOK_INTAKE_DISPATCH": "false"}
    process = subprocess.Popen(
        [runbook, "intake", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, "runbook intake exited"
                time.sleep(0.1)
        assert response.json() == {"status": "ok", "database": "ok"}
    finally:
        process.terminate()
        process.wait(15)


UNKNOWN_FLOW_TABLE = (
    "routes:\n"
    "  - name: disk-space\n"
    "    flow: disk-cleanup\n"
    "    match: [{text: 'disk'}]\n"
    "fallback: {name: triage, notify: [slack]}\n"
)


def _start_intake(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`intake.cli.run` (what `runbook intake` runs) in a child process; returns once it exits
    (a refused start-up) or fails the test if it is still serving after 60 s."""
    code = f"from intake.cli import run; run('127.0.0.1', {free_port()})"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def _assert_one_clear_line(done: subprocess.CompletedProcess[str], origin: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and origin in lines[0]
    assert "route 'disk-space' names unknown flow 'disk-cleanup'" in lines[0]


def test_intake_refuses_to_start_when_a_route_names_an_unknown_flow(
    intake_env: dict[str, str], tmp_path: Path
) -> None:
    table = tmp_path / "routes.yaml"
    table.write_text(UNKNOWN_FLOW_TABLE)
    done = _start_intake({**intake_env, "RUNBOOK_INTAKE_ROUTES_FILE": str(table)})
    _assert_one_clear_line(done, str(table))


async def test_intake_refuses_to_start_when_its_routes_block_names_an_unknown_flow(
    deployed: str, intake_env: dict[str, str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = unique("routes")
    with temporary_settings(updates={PREFECT_API_URL: deployed}):
        await IntakeRoutes(table=UNKNOWN_FLOW_TABLE).asave(name, overwrite=True)
    env = {**intake_env, "PREFECT_API_URL": deployed, "RUNBOOK_INTAKE_ROUTES_BLOCK": name}
    done = await asyncio.to_thread(_start_intake, env)
    _assert_one_clear_line(done, f"IntakeRoutes block {name!r}")
