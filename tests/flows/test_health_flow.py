"""The health-check flow run through a real Prefect server leaves its report and artifact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.health import health_check
from runbook.domain import HealthReport, Status
from runbook.settings import get_settings
from tests.tasks.netfakes import scripted_http_server

pytestmark = pytest.mark.integration


@pytest.fixture
def local_targets(pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with scripted_http_server() as base:
        monkeypatch.setenv("RUNBOOK_API_URL", f"{base}/ok")
        monkeypatch.setenv("RUNBOOK_APP_DATABASE_URL", pg_url)
        monkeypatch.setenv("RUNBOOK_APP_REDIS_URL", redis_url)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


async def test_health_flow_completes_and_leaves_artifact(
    prefect_server: str, local_targets: None
) -> None:
    state = await health_check(return_state=True)
    assert state.is_completed(), state.message
    report = await state.result()
    assert isinstance(report, HealthReport)
    assert len(report.checks) >= 10
    assert report.by_name("api_health").status is Status.OK
    assert report.by_name("pg_connections").status is Status.OK
    assert report.by_name("redis_ping").status is Status.OK
    assert report.by_name("pg_slow_queries").status is Status.UNAVAILABLE

    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tables = [a for a in artifacts if a.key == "health-report"]
    assert len(tables) == 1
    assert tables[0].type == "table"
    assert "api_health" in str(tables[0].data)
    assert "redis_latency" in str(tables[0].data)


def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "runbook.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_runbook_check_prints_the_report_and_exits_zero_when_healthy(
    pg_url: str, redis_url: str
) -> None:
    with scripted_http_server() as base:
        env = {
            "RUNBOOK_API_URL": f"{base}/ok",
            "RUNBOOK_APP_DATABASE_URL": pg_url,
            "RUNBOOK_APP_REDIS_URL": redis_url,
            "PREFECT_API_URL": "",
        }
        code, out, err = _run_cli("check", env=env)
    assert code == 0, out + err
    for name in ("api_health", "pg_connections", "redis_latency", "pg_slow_queries"):
        assert name in out
    assert "Traceback" not in err


def test_runbook_check_exits_two_when_the_api_answers_503(pg_url: str, redis_url: str) -> None:
    with scripted_http_server() as base:
        env = {
            "RUNBOOK_API_URL": f"{base}/down",
            "RUNBOOK_APP_DATABASE_URL": pg_url,
            "RUNBOOK_APP_REDIS_URL": redis_url,
            "PREFECT_API_URL": "",
        }
        code, out, _ = _run_cli("check", "--json", env=env)
    assert code == 2
    report = HealthReport.model_validate_json(out)
    assert report.by_name("api_health").status is Status.CRITICAL
