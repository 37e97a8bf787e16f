"""A security alert through the intake starts the `security-incident` flow (runbook Security
Procedures), with the incident it opened; the alert's labels stay on the incident for the flow
to read (e.g. the store it names)."""

from __future__ import annotations

import httpx
import pytest
from intake_harness import (
    DEPLOYMENT,
    IntakeProcess,
    Sender,
    _remediate,
    eventually,
    fixture_payload,
    flow_run_of,
    flow_runs_by_incident,
    unique,
)

from runbook import opsdb
from runbook.incidents import get_incident

pytestmark = pytest.mark.integration


async def _security_deployment(api_url: str) -> None:
    """A stand-in deployment named like the real one: the intake only needs a run to create."""
    from prefect import Flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        flow: Flow[..., None] = Flow(fn=_remediate, name="security-incident")
        await (await flow.ato_deployment(name=DEPLOYMENT)).aapply()


def security_alert(target: str) -> dict[str, object]:
    payload = fixture_payload("alertmanager_firing")
    labels = {
        "alertname": "StoreKeyUsedFromUnknownAddresses",
        "category": "security",
        "severity": "critical",
        "store": "store-318",
        "target": target,
    }
    payload["groupKey"] = f'{{}}:{{alertname="{labels["alertname"]}"}}'
    payload["groupLabels"] = {"alertname": labels["alertname"]}
    payload["commonLabels"] = labels
    payload["commonAnnotations"] = {"summary": "bulk export with a store key from a new address"}
    alert = payload["alerts"][0]  # type: ignore[index]
    alert["labels"] = labels
    alert["annotations"] = payload["commonAnnotations"]
    alert["fingerprint"] = unique("fp")
    return payload


async def test_security_alert_through_the_intake_starts_security_incident(
    deployed: str, intake_server: IntakeProcess, pg_url: str
) -> None:
    await _security_deployment(deployed)
    path, body, headers = Sender().request("alertmanager", security_alert(unique("sec")))
    async with httpx.AsyncClient(base_url=intake_server.url, timeout=10) as client:
        answer = await client.post(path, content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["route"] == "security-incident"
    incident = answer.json()["incident"]

    async def dispatched() -> bool:
        return bool((await flow_runs_by_incident(deployed)).get(incident))

    await eventually(dispatched, timeout=30)
    assert await flow_run_of(deployed, incident) == (
        "security-incident",
        DEPLOYMENT,
        {"incident_id": incident},
    )
    async with await opsdb.connect(pg_url) as conn:
        opened = await get_incident(conn, incident)
    assert opened is not None and opened.labels.get("store") == "store-318"
