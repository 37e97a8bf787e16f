"""One sandbox for the whole tests/sandbox session (a subprocess on the local Postgres/Redis),
blocks built from the environment it prints, and a reset to baseline before every test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from blocks import (
    AppDatabase,
    AppRedis,
    LangSmith,
    LlmProbe,
    PagerDuty,
    Policy,
    Railway,
    Rds,
    Slack,
    StatusPages,
    SupportApi,
)
from runbook.settings import Settings
from sandbox.handle import SandboxHandle, start_sandbox

T = TypeVar("T")


class Blocks(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    api: SupportApi
    db: AppDatabase
    cache: AppRedis
    railway: Railway
    rds: Rds
    langsmith: LangSmith
    pages: StatusPages
    llm: LlmProbe
    slack: Slack
    pagerduty: PagerDuty
    policy: Policy


def settings_from(env: dict[str, str]) -> Settings:
    data: dict[str, Any] = {
        k.removeprefix("RUNBOOK_").lower(): v
        for k, v in env.items()
        if k != "RUNBOOK_SANDBOX_CONTROL_URL"
    }
    data["status_pages"] = json.loads(data["status_pages"])
    return Settings(**data)


def blocks_from(env: dict[str, str]) -> Blocks:
    s = settings_from(env)
    return Blocks(
        api=SupportApi.from_settings(s),
        db=AppDatabase.from_settings(s),
        cache=AppRedis.from_settings(s),
        railway=Railway.from_settings(s),
        rds=Rds.from_settings(s),
        langsmith=LangSmith.from_settings(s),
        pages=StatusPages.from_settings(s),
        llm=LlmProbe.from_settings(s),
        slack=Slack.from_settings(s),
        pagerduty=PagerDuty.from_settings(s),
        policy=Policy.from_settings(s),
    )


@pytest.fixture(scope="session")
def sandbox(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxHandle]:
    data_dir: Path = tmp_path_factory.mktemp("sandbox")
    handle = start_sandbox(
        data_dir=data_dir,
        database_url=pg_url,
        redis_url=redis_url,
        traffic_rps=50,
        rds_transition_s=3.0,  # long enough to see 'modifying' on a busy machine
        railway_rps=40,
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def blocks(sandbox: SandboxHandle) -> Blocks:
    return blocks_from(sandbox.env)


@pytest.fixture(autouse=True)
def _baseline(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    timeout: float = 10.0,
    interval: float = 0.25,
) -> T:
    """Poll `probe` until `ok(result)`; return the last result either way (the test asserts)."""
    deadline = time.monotonic() + timeout
    result = await probe()
    while not ok(result) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        result = await probe()
    return result
