"""Fixtures of the intake tests (the harness itself is in intake_harness.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from intake_harness import DEPLOYMENT, SECRETS, IntakeProcess, register_route_deployments


@pytest.fixture(scope="session")
def intake_env(pg_url: str, session_dir: Path) -> dict[str, str]:
    """The environment every intake process gets (Prefect URL added per test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env.update(SECRETS)
    env.update(
        {
            "RUNBOOK_OPS_DATABASE_URL": pg_url,
            "RUNBOOK_INTAKE_DISPATCH_POLL_S": "0.2",
            "RUNBOOK_INTAKE_DISPATCH_BACKOFF_S": "0.1",
            "RUNBOOK_INTAKE_DISPATCH_BACKOFF_MAX_S": "0.5",
            "RUNBOOK_INTAKE_COOLDOWN_S": "2",
            "RUNBOOK_DEPLOYMENT_NAME": DEPLOYMENT,
            "PREFECT_HOME": str(session_dir / "prefect-home"),
            "PREFECT_API_URL": "",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    return env


@pytest.fixture
def spawn_intake(
    intake_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., IntakeProcess]]:
    """Start intake processes with extra env; every one is stopped (by its PID) afterwards."""
    started: list[IntakeProcess] = []
    log_dir = tmp_path_factory.mktemp("intake-logs")

    def spawn(port: int | None = None, ready: int = 200, **extra: str) -> IntakeProcess:
        proc = IntakeProcess({**intake_env, **extra}, log_dir, port)
        started.append(proc)
        return proc.start(ready=ready)

    yield spawn
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
async def deployed(prefect_server: str) -> AsyncIterator[str]:
    """The shared Prefect server with the route deployments registered; yields its API URL."""
    api_url = f"{prefect_server}/api"
    await register_route_deployments(api_url)
    yield api_url


@pytest.fixture
async def ops_db(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    from runbook import opsdb

    conn = await opsdb.connect(pg_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def intake_server(
    deployed: str, intake_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IntakeProcess]:
    """One intake process for the session, dispatching to the shared Prefect server."""
    proc = IntakeProcess(
        {**intake_env, "PREFECT_API_URL": deployed}, tmp_path_factory.mktemp("intake-shared")
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_db(pg_url: str) -> Iterator[str]:
    """An ops database of this test's own (its outbox is seen by no other intake)."""
    import uuid

    name = f"runbook_intake_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
