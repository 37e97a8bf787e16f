"""The schedules of `prefect.yaml` as the Prefect server runs them: the deployments created the
way `runbook serve` creates them, their next runs read back from the Prefect API."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

from flows.serve import build_deployments
from runbook.settings import get_settings

pytestmark = pytest.mark.integration
WATCHED = ("scheduled-maintenance", "maintenance-notice", "metrics-watch")


async def _next_runs(client: Any, deployment_id: Any, count: int) -> list[Any]:
    """Ask the server to schedule the deployment (what its scheduler service does every
    minute), then read its next scheduled runs."""
    await client._client.post(f"/deployments/{deployment_id}/schedule", json={"min_runs": count})
    runs = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=count,
    )
    return [datetime.fromtimestamp(r.expected_start_time.timestamp(), UTC) for r in runs]


async def test_the_server_schedules_the_window_on_sunday_and_its_notice_on_friday_at_0200_utc(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_DEPLOYMENT_NAME", f"schedules-{uuid.uuid4().hex[:6]}")
    get_settings.cache_clear()
    served = {d.flow_name: d for d in await build_deployments(only=WATCHED)}
    ids = {name: await d.aapply() for name, d in served.items()}
    try:
        async with get_client() as client:
            sundays = await _next_runs(client, ids["scheduled-maintenance"], 3)
            fridays = await _next_runs(client, ids["maintenance-notice"], 3)
            minutes = await _next_runs(client, ids["metrics-watch"], 5)
    finally:
        async with get_client() as client:
            for deployment_id in ids.values():  # no per-minute runs left behind
                await client.delete_deployment(deployment_id)
        get_settings.cache_clear()
    assert len(sundays) == 3 and len(fridays) == 3
    assert {(t.weekday(), t.hour, t.minute) for t in sundays} == {(6, 2, 0)}
    assert {(t.weekday(), t.hour, t.minute) for t in fridays} == {(4, 2, 0)}
    assert {b - a for a, b in itertools.pairwise(sundays)} == {timedelta(weeks=1)}
    # each notice goes out 48 hours before a window
    windows = {*sundays, sundays[-1] + timedelta(weeks=1)}
    assert {f + timedelta(hours=48) for f in fridays} <= windows
    assert len(minutes) == 5
    assert {b - a for a, b in itertools.pairwise(minutes)} == {timedelta(minutes=1)}
