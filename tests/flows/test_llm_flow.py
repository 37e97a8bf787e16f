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
