"""Incident flows read the incident the intake opened: context in the artifact, resolved = no-op."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.high_error_rate import high_error_rate
from runbook import opsdb
from runbook.alerts import Alert, AlertStatus, Severity
from runbook.incidents import Placement, record_alert, resolve_incident
from sandbox.handle import SandboxHandle

pytestmark = pytest.mark.integration

PLACEMENT = Placement(
    route="high-error-rate",
    flow="high-error-rate",
    target="api-context-test",
    group_key="production",
    actions=(),
)


async def open_incident(name: str) -> str:
    alert = Alert(
        source="alertmanager",
        name=name,
        status=AlertStatus.FIRING,
        severity=Severity.CRITICAL,
        summary="Error rate above 5%",
        fingerprint=name,
    )
    async with await opsdb.connect() as conn:
        recorded = await record_alert(conn, alert, PLACEMENT, cooldown_s=0)
    assert recorded.incident_id
    return recorded.incident_id


async def test_resolved_incident_is_never_remediated(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    sb.inject("bad-deploy")
    incident = await open_incident("HighErrorRateResolved")
    async with await opsdb.connect() as conn:
        await resolve_incident(conn, incident, by="test")
    journal_before = len(sb.journal())
    result = await high_error_rate(incident)
    assert result.decision == "none"
    assert "resolved before the flow started" in result.why
    assert len(sb.journal()) == journal_before


async def test_timeline_artifact_carries_the_incident_context(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    incident = await open_incident("HighErrorRateContext")
    result = await high_error_rate(incident, dry_run=True)
    assert result.incident_id == incident
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"timeline-{incident}"]))
        )
    text = str(artifacts[-1].data)
    assert "HighErrorRateContext" in text
    assert "firing alerts attached" in text and "duplicate deliveries" in text
    assert "decided" in text
