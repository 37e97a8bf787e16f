"""Every runbook task re-reads: no Prefect cache, no persisted results (issue #15).

A flow re-checks a symptom after an approval with the same task and the same inputs it read the
symptom with before. With Prefect's default cache policy (inputs + task source + run id) and
results persisted — one setting away, `PREFECT_RESULTS_PERSIST_BY_DEFAULT=true` — that re-check
would be answered from the cache: the old value, and an action approved for a symptom that is
gone. Our tasks are declared `cache_policy=NO_CACHE, persist_result=False` (which also saves the
cache-key hashing on every call).
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from prefect import Task, flow
from prefect.cache_policies import DEFAULT, NO_CACHE
from prefect.settings import (
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)

import tasks
from blocks import AppRedis
from tasks.redis import get_redis_keys


def _all_tasks() -> list[tuple[str, Task[Any, Any]]]:
    found = []
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, Task) and obj.fn.__module__ == module.__name__:
                found.append((f"tasks.{info.name}.{name}", obj))
    return found


@pytest.mark.unit
def test_every_task_is_declared_without_cache_and_without_persisted_results() -> None:
    found = _all_tasks()
    assert len(found) >= 70, "the task modules were not all found"
    cached = [name for name, t in found if t.cache_policy is not NO_CACHE]
    persisted = [name for name, t in found if t.persist_result is not False]
    assert cached == [], f"tasks that may answer from a cache: {cached}"
    assert persisted == [], f"tasks that persist results: {persisted}"


@pytest.mark.integration
def test_a_recheck_in_the_same_run_reads_again_even_with_results_persisted(
    prefect_server: str, redis_url: str, tmp_path: Path
) -> None:
    """The same task, same inputs, same run, the data changed in between: ours sees the change;
    the same function under Prefect's default policy is answered from the cache."""
    client = redis.Redis.from_url(redis_url)
    cache = AppRedis(url=redis_url)
    prefix = f"fresh-{uuid.uuid4().hex[:8]}"
    defaulted = get_redis_keys.with_options(
        name="get-redis-keys-default-cache",
        cache_policy=DEFAULT,
        persist_result=True,
    )

    @flow(name="fresh-reads")
    async def read_twice(which: str) -> tuple[int, int]:
        read = get_redis_keys if which == "ours" else defaulted
        before = (await read(cache)).details["keys"]
        client.mset({f"{prefix}-{which}-{i}": 1 for i in range(5)})
        after = (await read(cache)).details["keys"]
        return before, after

    with temporary_settings(
        updates={
            PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
            PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results"),
        }
    ):
        stale_before, stale_after = asyncio.run(read_twice("default"))
        before, after = asyncio.run(read_twice("ours"))
    client.close()
    assert stale_after == stale_before, "Prefect's default cache did not apply: test is void"
    assert after == before + 5
