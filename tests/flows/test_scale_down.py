"""§2: replicas added for load go back down, but only after the Policy cool-down."""

from __future__ import annotations

import pytest

from flows.high_latency import high_latency
from runbook.settings import get_settings
from sandbox.handle import SandboxHandle

pytestmark = pytest.mark.integration


async def test_scaled_up_replicas_return_after_the_cool_down(
    prefect_server: str, platform_env: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = platform_env
    sb.inject("high-load")
    import asyncio

    await asyncio.sleep(12)
    up = await high_latency(verify_window_s=40)
    for _ in range(3):  # on a busy machine the load can take a few more seconds to show in P99
        if up.decision != "none":
            break
        await asyncio.sleep(6)
        up = await high_latency(verify_window_s=40)
    assert up.action == "scale_replicas" and up.action_status == "done", up
    scaled_to = sb.state()["replicas"]
    assert scaled_to > 2
    sb.clear()
    await asyncio.sleep(31)  # a recent window of calm traffic

    early = await high_latency()  # calm, but inside the 30 min cool-down: stay up
    assert early.decision == "none"
    assert sb.state()["replicas"] == scaled_to

    monkeypatch.setenv("RUNBOOK_SCALE_DOWN_COOLDOWN_S", "0")
    get_settings.cache_clear()
    down = await high_latency(verify_window_s=30)
    assert down.decision == "scale_down", down
    assert down.action_status == "done"
    assert sb.state()["replicas"] == 2
    patches = [e for e in sb.journal() if e["operation"] == "environmentPatchCommit"]
    assert len(patches) >= 2
