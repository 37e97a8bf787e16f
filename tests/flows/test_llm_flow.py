"""§3 against the sandbox: request queuing is turned off again once the models answer."""

from __future__ import annotations

import pytest

from blocks.railway import Railway
from flows.llm_provider import llm_provider
from sandbox.handle import SandboxHandle
from tasks import railway

pytestmark = pytest.mark.integration


async def test_request_queuing_is_turned_off_once_the_models_are_healthy(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    sb = platform_env
    rw = await Railway.resolve()
    await railway.set_variables.fn(rw, {"REQUEST_QUEUE_ENABLED": "true"})  # left by an outage
    before = len(sb.journal())
    result = await llm_provider()
    assert result.decision == "stop_queuing", result
    assert result.action == "disable_request_queue" and result.action_status == "done"
    assert (await railway.get_variable.fn(rw, "REQUEST_QUEUE_ENABLED")).value == "false"
    changes = [e for e in sb.journal()[before:] if e["operation"] == "variableCollectionUpsert"]
    assert [c["args"]["variables"] for c in changes] == [{"REQUEST_QUEUE_ENABLED": "false"}]
    again = await llm_provider()
    assert again.decision == "none", "nothing left to do"


async def test_a_widespread_openai_outage_drafts_a_message_to_openai_support_and_pages(
    prefect_server: str, platform_env: SandboxHandle
) -> None:
    """§3 "contact OpenAI if widespread": nothing talks to OpenAI by itself — a drafted message
    reaches the ops mailbox and the on-call page names the contact."""
    sb = platform_env
    sb.inject("llm-outage")
    mail_before, pages_before = len(sb.sink("email")), len(sb.sink("pagerduty"))
    result = await llm_provider(verify_window_s=20)
    assert result.action == "switch_model" and result.action_status == "done", result
    mail = sb.sink("email")[mail_before:]
    drafts = [m for m in mail if "OpenAI Support" in m["subject"]]
    assert drafts, [m["subject"] for m in mail]
    assert "support@openai.com" in drafts[0]["body"] and "primary model" in drafts[0]["body"]
    pages = [str(p) for p in sb.sink("pagerduty")[pages_before:]]
    assert any("OpenAI Support" in p for p in pages)
