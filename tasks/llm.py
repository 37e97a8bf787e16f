"""The LLM provider (OpenAI-compatible): a minimal chat request to one model.

Runbook §3 "LLM Provider Issues": is the primary model answering, and would the fallback?
A 429 or 5xx from the provider is the symptom being observed, so it is returned (with the
provider's error code and Retry-After), not raised; a refused key raises `NotAuthorized`
and an unreachable endpoint `TransientError` (after one retry).
"""

from __future__ import annotations

import time

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.llm import LlmProbe
from runbook.errors import NotAuthorized
from tasks.http import exchange, retry_after

SERVICE = "llm"


class ModelProbe(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    ok: bool
    http_status: int
    error_type: str | None = None
    error_code: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    latency_ms: float


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(error, dict):
        return None, None
    code, kind = error.get("code"), error.get("type")
    return (str(kind) if kind else None), (str(code) if code else None)


@task(name="get-llm-model-health", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_model_health(llm: LlmProbe, model: str | None = None) -> ModelProbe:
    """Send a one-token chat completion to `model` (default: the primary) and report."""
    name = model or llm.primary_model
    body = {"model": name, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    async with llm.get_client() as client:
        started = time.perf_counter()
        response = await exchange(
            SERVICE, lambda: client.post("chat/completions", json=body), check=False
        )
        elapsed = round((time.perf_counter() - started) * 1000, 1)
    code = response.status_code
    if code in (401, 403):
        raise NotAuthorized(f"{SERVICE}: HTTP {code}, API key refused")
    if code < 400:
        return ModelProbe(model=name, ok=True, http_status=code, latency_ms=elapsed)
    kind, error_code = _error_fields(response)
    retryable = (code == 429 and error_code != "insufficient_quota") or code >= 500
    return ModelProbe(
        model=name,
        ok=False,
        http_status=code,
        error_type=kind,
        error_code=error_code,
        retryable=retryable,
        retry_after_s=retry_after(response.headers),
        latency_ms=elapsed,
    )
