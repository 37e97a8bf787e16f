"""LangSmith traces (runs query API): failed traces and slow traces over a recent window.

Runbook §1 "Check recent errors in LangSmith" and §2 "Check LangSmith trace durations,
filter by duration > 5 s".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.langsmith import LangSmith
from runbook.errors import ConfigurationError, PermanentError
from tasks.http import exchange

SERVICE = "langsmith"
PAGE = 1000


class TraceErrors(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: int
    runs: int
    errored: int
    error_rate_pct: float
    llm_errored: int
    sample_errors: tuple[str, ...]


class TraceLatency(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: int
    runs: int
    slow: int
    threshold_s: float
    p50_s: float
    p99_s: float


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return round(ordered[index], 3)


async def _project_id(ls: LangSmith, client: Any) -> str:
    response = await exchange(
        SERVICE, lambda: client.get("/api/v1/sessions", params={"name": ls.project})
    )
    found = response.json()
    if not found:
        raise ConfigurationError(f"{SERVICE}: project {ls.project!r} not found")
    return str(found[0]["id"])


async def _runs(ls: LangSmith, window_s: int, **query: Any) -> list[dict[str, Any]]:
    since = (datetime.now(UTC) - timedelta(seconds=window_s)).isoformat()
    runs: list[dict[str, Any]] = []
    async with ls.get_client() as client:
        project = await _project_id(ls, client)
        cursor: str | None = None
        for _ in range(50):  # bounded paging
            body = {"session": [project], "start_time": since, "limit": PAGE, **query}
            if cursor:
                body["cursor"] = cursor
            response = await exchange(SERVICE, _poster(client, body))
            try:
                page = response.json()
                runs.extend(page["runs"])
                cursor = (page.get("cursors") or {}).get("next")
            except (ValueError, KeyError, TypeError):
                raise PermanentError(f"{SERVICE}: unexpected answer to runs/query") from None
            if not cursor:
                break
    return runs


def _poster(client: Any, body: dict[str, Any]) -> Any:
    async def post() -> Any:
        return await client.post("/api/v1/runs/query", json=body)

    return post


def _latency(run: dict[str, Any]) -> float:
    start = datetime.fromisoformat(str(run["start_time"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(run["end_time"]).replace("Z", "+00:00"))
    return (end - start).total_seconds()


@task(name="get-langsmith-errors", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_trace_errors(ls: LangSmith, window_s: int = 300) -> TraceErrors:
    """Root traces in the window: how many failed, how many LLM calls failed, and samples."""
    runs = await _runs(ls, window_s)
    roots = [r for r in runs if r.get("parent_run_id") is None]
    failed = [r for r in roots if r.get("error")]
    llm_failed = [r for r in runs if r.get("run_type") == "llm" and r.get("error")]
    samples: list[str] = []
    for run in failed:
        text = str(run["error"])[:200]
        if text not in samples:
            samples.append(text)
        if len(samples) == 5:
            break
    rate = 100.0 * len(failed) / len(roots) if roots else 0.0
    return TraceErrors(
        window_s=window_s,
        runs=len(roots),
        errored=len(failed),
        error_rate_pct=round(rate, 2),
        llm_errored=len(llm_failed),
        sample_errors=tuple(samples),
    )


@task(name="get-langsmith-latency", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_trace_latency(
    ls: LangSmith, window_s: int = 300, threshold_s: float = 5.0
) -> TraceLatency:
    """Root trace durations in the window: P50, P99 and how many exceed `threshold_s`."""
    runs = await _runs(ls, window_s, is_root=True)
    latencies = [_latency(r) for r in runs]
    return TraceLatency(
        window_s=window_s,
        runs=len(latencies),
        slow=sum(1 for x in latencies if x > threshold_s),
        threshold_s=threshold_s,
        p50_s=_percentile(latencies, 50),
        p99_s=_percentile(latencies, 99),
    )
