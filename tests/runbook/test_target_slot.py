"""One destructive act per target at a time: the target's global concurrency limit, held through
`runbook.safety.target_slot`, on a real Prefect server (what an operator sees in the UI's
Concurrency page)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from runbook.errors import PermanentError
from runbook.safety import target_slot

pytestmark = pytest.mark.integration


async def new_limit() -> str:
    name = f"runbook-destructive-test-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=1)
        )
    return name


async def active_slots(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).active_slots


async def test_a_second_act_on_the_target_waits_for_the_first_to_release_the_slot(
    prefect_server: str,
) -> None:
    name = await new_limit()
    order: list[str] = []
    holding = asyncio.Event()

    async def act(tag: str, hold_s: float) -> None:
        async with target_slot(name, wait_s=60):
            order.append(f"{tag} in")
            holding.set()
            await asyncio.sleep(hold_s)
            order.append(f"{tag} out")

    first = asyncio.create_task(act("first", 1.5))
    await holding.wait()
    assert await active_slots(name) == 1, "the held slot shows in Prefect"
    await act("second", 0)
    await first
    assert order == ["first in", "first out", "second in", "second out"]
    assert await active_slots(name) == 0, "released at the end"


async def test_a_slot_held_longer_than_the_wait_is_a_timeout_and_stays_with_its_holder(
    prefect_server: str,
) -> None:
    name = await new_limit()
    holding, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with target_slot(name):
            holding.set()
            await done.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(TimeoutError, match="not free within 1 s"):
        async with target_slot(name, wait_s=1):
            pytest.fail("acted while another act held the target")
    assert await active_slots(name) == 1
    done.set()
    await holder
    assert await active_slots(name) == 0


async def test_a_target_without_its_limit_is_a_permanent_error(prefect_server: str) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        async with target_slot(f"runbook-destructive-missing-{uuid.uuid4().hex[:8]}"):
            pytest.fail("acted without the target's limit")
