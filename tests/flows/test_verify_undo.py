"""Verify and undo: a reversible act that does not help is undone, recorded and escalated."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow

from blocks.railway import Railway
from flows.acts import EXECUTORS, Platform
from flows.notifications import page
from runbook import ledger, opsdb
from runbook.actions import ActionRequest
from runbook.plan import ActionName
from runbook.verify import verify_or_undo
from sandbox.handle import SandboxHandle

pytestmark = pytest.mark.integration
SWITCH = EXECUTORS[ActionName.SWITCH_MODEL]


@flow(name="verify-undo-test")
async def switch_that_does_not_help(incident: str) -> dict[str, object]:
    rw = await Railway.resolve()
    request = ActionRequest(
        incident_id=incident,
        action="switch_model",
        target=f"railway:{rw.service_id}",
        params={"DEFAULT_MODEL": "gpt-4o-mini"},
        reversible=True,
    )
    async with await opsdb.connect() as conn:  # recorded as done by the safety core
        from runbook.actions import ActionClass

        await ledger.ensure(
            conn, request, ActionClass.SAFE, status="done", dry_run=False, flow_run_id=None
        )
    await SWITCH.act(Platform(rw), {"DEFAULT_MODEL": "gpt-4o-mini"})

    async def verify() -> tuple[bool, str]:
        return False, "error rate still 12 %"

    outcome = await verify_or_undo(
        request,
        verify=verify,
        undo=lambda: SWITCH.act(Platform(rw), {"DEFAULT_MODEL": "gpt-4o"}),
        page=page,
        window_s=2.0,
        interval_s=1.0,
    )
    return {
        "outcome": outcome.model_dump(),
        "model_back": await SWITCH.reconcile(Platform(rw), {"DEFAULT_MODEL": "gpt-4o"})
        if SWITCH.reconcile
        else False,
    }


async def test_failed_verification_undoes_records_and_escalates(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    incident = f"inc-undo-{uuid.uuid4().hex[:8]}"
    pages_before = len(sb.sink("pagerduty"))
    result = await switch_that_does_not_help(incident)
    outcome = result["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["verified"] is False and outcome["undone"] is True
    assert result["model_back"] is True
    upserts = [
        e["args"]["variables"] for e in sb.journal() if e["operation"] == "variableCollectionUpsert"
    ][-2:]
    assert upserts == [{"DEFAULT_MODEL": "gpt-4o-mini"}, {"DEFAULT_MODEL": "gpt-4o"}]
    async with await opsdb.connect() as conn:
        entries = await ledger.entries(conn, incident)
        events = await ledger.timeline(conn, incident)
    assert [e.status for e in entries] == ["undone"]
    assert entries[0].verified is False
    assert [e.kind for e in events][-3:] == ["failed", "undone", "escalated"]
    pages = sb.sink("pagerduty")[pages_before:]
    assert any("did not fix the problem" in str(p) and "undone" in str(p) for p in pages)
