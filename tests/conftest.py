"""Test foundations: a real Prefect server per session, throwaway Postgres database, Redis db.

PREFECT_HOME and friends are set here, before anything imports prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="runbook-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect-home")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_API_URL"] = ""
os.environ["RUNBOOK_RETRY_FAST"] = "1"

import psycopg  # noqa: E402
import pytest  # noqa: E402

# pytest-xdist runs test files on several workers (`-n`, pyproject addopts): each worker is its
# own session with its own Prefect server, sandbox, ops database and Redis databases
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("RUNBOOK_SANDBOX_REDIS_URL", f"redis://127.0.0.1:6379/{1 + _WORKER}")

TEST_APPROVAL_SECRET = "test-approval-secret-7f3a9c-0d41e8b2c6a95f37"  # >= 32 bytes
PG_ADMIN_URL = os.environ.get("RUNBOOK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("RUNBOOK_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _with_db(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@contextlib.contextmanager
def throwaway_database(prefix: str = "runbook_test") -> Iterator[str]:
    """A new, empty database on the local PostgreSQL server (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(PG_ADMIN_URL, name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL server, dropped at the end."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number of our own on the local server, flushed before and after."""
    import redis

    url = f"{REDIS_BASE_URL}/{15 - _WORKER}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path) -> Iterator[str]:
    """A real Prefect server (SQLite, UI on) for the whole session; yields its base URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sandbox.local.prefect_server import LocalPrefectServer

    server = LocalPrefectServer(
        session_dir / "server-home",
        ui=True,
        # free a crashed holder's concurrency slot soon after its 60 s lease ends
        extra_env={"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2"},
    )
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.url
            _drain_prefect_workers()
    finally:
        os.environ["PREFECT_API_URL"] = ""
        server.stop()


def _drain_prefect_workers() -> None:
    """Flush logs and events to the server before it stops (else exit hangs ~70 s)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def sandbox_platform(session_dir: Path) -> Iterator[object]:
    """One simulated platform for the session (its own database on the local servers)."""
    from sandbox.handle import start_sandbox

    handle = start_sandbox(data_dir=session_dir / "sandbox")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def platform_env(
    sandbox_platform: object, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    """Point every client at the sandbox and our ops database at the test database."""
    from runbook.settings import get_settings

    handle = sandbox_platform
    handle.reset()  # type: ignore[attr-defined]
    for key, value in {**handle.env, **handle.extra_env}.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RUNBOOK_OPS_DATABASE_URL", pg_url)
    monkeypatch.setenv("RUNBOOK_APPROVERS", "alice,bob")
    # each approver's own channel (a webhook on the sandbox's Slack fake): codes go only there
    slack = handle.env["RUNBOOK_SLACK_WEBHOOK_URL"]  # type: ignore[attr-defined]
    monkeypatch.setenv("RUNBOOK_APPROVER_WEBHOOKS", json.dumps({"alice": slack, "bob": slack}))
    monkeypatch.setenv("RUNBOOK_APPROVAL_SECRET", TEST_APPROVAL_SECRET)
    # tests act on the same sandbox target many times an hour
    monkeypatch.setenv("RUNBOOK_MUTATION_BUDGET_PER_HOUR", "100")
    # ... and roll the same sandbox service back many times: the shipped 2 destructive acts per
    # target per hour would make a test's outcome depend on which tests ran before it (the
    # budget tests set their own)
    monkeypatch.setenv("RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR", "100")
    monkeypatch.setenv("RUNBOOK_APPROVAL_POLL_S", "1")
    monkeypatch.setenv("RUNBOOK_HOME", str(_SESSION_DIR / "runbook-home"))
    get_settings.cache_clear()
    yield handle
    get_settings.cache_clear()


# The slowest test files (measured with `--durations=0`, summed per file), in that order, ahead of
# the rest: pytest-xdist hands whole files to its workers (`--dist loadfile`) in collection order
# (`--no-loadscope-reorder`, pyproject), so the long ones start first and the many quick files
# fill the gaps at the end, instead of one worker starting the demo when the others are done.
SLOW_FILES_FIRST = (  # seconds per file on 2 cores, 3 workers, 2026-12-02 (2,796 s in all)
    "tests/e2e/test_demo.py",  # 415
    "tests/e2e/test_incident_flows.py",  # 327
    "tests/faults/test_sigkill_served.py",  # 263
    "tests/faults/test_sigkill.py",  # 211
    "tests/e2e/test_scale_out.py",  # 160
    "tests/runbook/test_safety_core.py",  # 134
    "tests/flows/test_approval_suspend.py",  # 131
    "tests/faults/test_dependencies.py",  # 104
    "tests/flows/test_deployment.py",  # 94
    "tests/flows/test_scale_down.py",  # 75
    "tests/runbook/test_trust.py",  # 75
    "tests/intake/test_intake_dispatch.py",  # 70
    "tests/flows/test_database_flow.py",  # 65
    "tests/sandbox/test_sandbox_faults.py",  # 56
    "tests/flows/test_scaling.py",  # 53
    "tests/faults/test_secrets_everywhere.py",  # 50
    "tests/e2e/test_approval_ui.py",  # 41
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
