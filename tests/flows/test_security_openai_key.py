"""Rotate the OpenAI key against the sandbox's admin API, Railway and the app, with a real
Prefect server: the app keeps answering, and neither key's value shows up anywhere."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from flows.rotate_openai_key import rotate_openai_key
from sandbox.handle import SandboxHandle
from tests.flows.security_support import (
    everywhere,
    form_description,
    manual_incident,
    ops,
    railway_variables,
    security_env,
)
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
__all__ = ["security_env"]  # the fixture, imported for these tests


def project_keys(sb: SandboxHandle) -> list[dict[str, object]]:
    extra = sb.extra_env
    url = f"{extra['RUNBOOK_OPENAI_ADMIN_URL']}/organization/projects/"
    url += f"{extra['RUNBOOK_OPENAI_PROJECT_ID']}/api_keys"
    headers = {"Authorization": f"Bearer {extra['RUNBOOK_OPENAI_ADMIN_KEY']}"}
    data: list[dict[str, object]] = httpx.get(url, headers=headers, timeout=10).json()["data"]
    return data


def chat_status(sb: SandboxHandle) -> int:
    """The app's answer to a chat. The sandbox fails 0.1 % of healthy requests on purpose
    ("application: upstream timeout", sandbox/behaviour.py): that one is asked again, so only
    an answer about the key (or anything else) counts."""
    url = f"{sb.env['RUNBOOK_API_URL']}/v1/chat"
    for _ in range(3):
        answer = httpx.post(url, json={"intent": "product_question"}, timeout=10)
        if answer.status_code != 500 or "upstream timeout" not in answer.text:
            break
    return answer.status_code


async def approve(sb: SandboxHandle, gate: str, why: str) -> None:
    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason=why)


def assert_nowhere(found: dict[str, str], secrets: dict[str, str]) -> None:
    for where, text in found.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} leaked into {where}"


async def test_openai_rotation_uses_a_new_service_account_then_revokes_the_old_key(
    prefect_server: str,
    security_env: SandboxHandle,
    pg_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sb = security_env
    original = os.environ["RUNBOOK_LLM_API_KEY"]  # the sandbox's app starts on this key
    assert railway_variables(sb)["OPENAI_API_KEY"] == original
    redeploys = len(ops(sb, "deploymentRedeploy"))
    incident = manual_incident()
    # the window ends as soon as a completion answers: a long one costs nothing when it works
    running = asyncio.create_task(rotate_openai_key(incident_id=incident, verify_window_s=60))

    gate = await waiting_gate(pg_url, incident, running=running)
    assert "`redeploy_service`" in await form_description(gate)
    new = railway_variables(sb)["OPENAI_API_KEY"]
    assert new != original and new.startswith("sk-svcacct-")
    upsert = ops(sb, "variableCollectionUpsert")[-1]["args"]
    assert upsert["skipDeploys"] is True and upsert["variables"]["OPENAI_API_KEY"] != new
    assert len(ops(sb, "deploymentRedeploy")) == redeploys, "no redeploy before the approval"
    await approve(sb, gate, "rotate")

    gate = await waiting_gate(pg_url, incident, running=running)
    form = await form_description(gate)
    assert "`revoke_openai_key`" in form and "key_sbxUserPrimary" in form
    assert len(ops(sb, "deploymentRedeploy")) == redeploys + 1
    assert any(k["id"] == "key_sbxUserPrimary" for k in project_keys(sb)), "old key until then"
    await approve(sb, gate, "app runs on the new key")
    result = await running

    assert (result.action_status, result.verified) == ("done", True), result
    owners = [str(k["owner"]) for k in project_keys(sb)]
    assert len(owners) == 1 and "service_account" in owners[0], "only the new account's key"
    assert railway_variables(sb)["OPENAI_API_KEY"] == new and chat_status(sb) == 200
    found = await everywhere(sb, pg_url, "".join(capfd.readouterr()))
    assert_nowhere(found, {"the new key": new, "the old key": original})


async def test_failed_verify_restores_the_old_key_redeploys_and_escalates(
    prefect_server: str,
    security_env: SandboxHandle,
    pg_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sb = security_env
    original = os.environ["RUNBOOK_LLM_API_KEY"]
    sb.inject("openai-key-restricted")  # the new service account's key gets no model access
    redeploys = len(ops(sb, "deploymentRedeploy"))
    pages = len(sb.sink("pagerduty"))
    incident = manual_incident()
    running = asyncio.create_task(rotate_openai_key(incident_id=incident, verify_window_s=5))
    gate = await waiting_gate(pg_url, incident, running=running)
    new = railway_variables(sb)["OPENAI_API_KEY"]
    await approve(sb, gate, "rotate")
    result = await running

    assert result.verified is False, result
    assert "put back" in result.summary and "redeployed" in result.summary
    assert railway_variables(sb)["OPENAI_API_KEY"] == original
    assert len(ops(sb, "deploymentRedeploy")) == redeploys + 2, "the rotation's, then the undo's"
    assert [k["id"] for k in project_keys(sb)] == ["key_sbxUserPrimary"], "new account retired"
    assert chat_status(sb) == 200, "the app answers on the old key again"
    escalated = [str(p) for p in sb.sink("pagerduty")[pages:]]
    assert any("rotate-openai-key" in p and "put back" in p for p in escalated), escalated
    found = await everywhere(sb, pg_url, "".join(capfd.readouterr()))
    assert_nowhere(found, {"the new key": new, "the old key": original})
