"""The support API's health endpoints (runbook: Health Checks → Check Service Status)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from blocks.policy import Policy
from blocks.support_api import SupportApi
from runbook.domain import CheckResult, Status, classify
from runbook.errors import TransientError
from tasks.http import exchange
from tasks.observe import observe, result

_HEALTHY_WORDS = {"ok", "healthy", "pass", "up", "ready"}
STORE_PATH = "/v1/store"  # a store's own requests: authenticated with its API key
CHAT_PATH = "/v1/chat"


def _failing_checks(response: httpx.Response) -> list[str]:
    """Names of the failing checks in a `{"checks": {...}}` health body, if there is one."""
    try:
        body = response.json()
    except ValueError:
        return []
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, dict):
        return []
    return sorted(
        k
        for k, v in checks.items()
        if str(v.get("status") if isinstance(v, dict) else v).lower() not in _HEALTHY_WORDS
    )


def classify_health_response(name: str, response: httpx.Response) -> CheckResult:
    """Judge one health answer: 5xx/4xx critical, unreadable body warn, unhealthy body critical."""
    component = "api"
    code = response.status_code
    if code >= 400:
        failing = _failing_checks(response)
        summary = f"HTTP {code}" + (f", unhealthy: {', '.join(failing)}" if failing else "")
        return result(name, component, Status.CRITICAL, summary, http_status=code, failing=failing)
    body: Any
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().lower()
        if text in _HEALTHY_WORDS:
            return result(name, component, Status.OK, f"HTTP {code} {text}", http_status=code)
        return result(
            name,
            component,
            Status.WARN,
            f"HTTP {code} but the body is not a health document",
            http_status=code,
        )
    if not isinstance(body, dict):
        return result(
            name,
            component,
            Status.WARN,
            f"HTTP {code} but the body is not a health document",
            http_status=code,
        )
    status_word = str(body.get("status", "ok")).lower()
    failing = sorted(
        key
        for key, value in body.items()
        if key != "status"
        and isinstance(value, str)
        and value.lower() not in _HEALTHY_WORDS
        and value.lower() in {"error", "down", "fail", "failed", "unhealthy", "degraded"}
    )
    checks = body.get("checks")
    if isinstance(checks, dict):
        failing += sorted(
            k
            for k, v in checks.items()
            if str(v.get("status") if isinstance(v, dict) else v).lower() not in _HEALTHY_WORDS
        )
    if status_word not in _HEALTHY_WORDS or failing:
        what = ", ".join(failing) if failing else status_word
        return result(
            name,
            component,
            Status.CRITICAL,
            f"HTTP {code}, unhealthy: {what}",
            http_status=code,
            failing=failing,
        )
    return result(name, component, Status.OK, f"HTTP {code} {status_word}", http_status=code)


async def _probe_endpoint(api: SupportApi, name: str, path: str) -> CheckResult:
    async def probe() -> CheckResult:
        async with api.get_client() as client:
            try:
                response = await client.get(path)
            except httpx.TimeoutException:
                return result(name, "api", Status.CRITICAL, f"no answer within {api.timeout_s:g} s")
        return classify_health_response(name, response)

    return await observe(name, "api", probe)


@task(
    name="get-api-health",
    task_run_name="get-api-health",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_api_health(api: SupportApi) -> CheckResult:
    """`GET /health`: is the API process up?"""
    return await _probe_endpoint(api, "api_health", api.health_path)


@task(
    name="get-api-readiness",
    task_run_name="get-api-readiness",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_api_readiness(api: SupportApi) -> CheckResult:
    """`GET /health/ready`: can the API reach its database and Redis?"""
    return await _probe_endpoint(api, "api_ready", api.ready_path)


@task(
    name="get-api-response-time",
    task_run_name="get-api-response-time",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def get_api_response_time(api: SupportApi, policy: Policy) -> CheckResult:
    """Time a `GET /health` round trip (the runbook's `curl -w` check)."""
    limit = policy.threshold("health_response_s")

    async def probe() -> CheckResult:
        async with api.get_client() as client:
            started = time.perf_counter()
            try:
                response = await client.get(api.health_path)
            except httpx.TimeoutException:
                return result(
                    "api_response_time",
                    "api",
                    Status.CRITICAL,
                    f"no answer within {api.timeout_s:g} s",
                )
            seconds = time.perf_counter() - started
        status = classify(seconds, limit.warn, limit.critical)
        return result(
            "api_response_time",
            "api",
            status,
            f"{seconds * 1000:.0f} ms (HTTP {response.status_code})",
            seconds=round(seconds, 4),
            http_status=response.status_code,
        )

    return await observe("api_response_time", "api", probe)


# -- store API keys and a live completion (Security Procedures) ---------------------------------
class KeyCheck(BaseModel):
    """What the support API said to a request made with a store key."""

    model_config = ConfigDict(frozen=True)

    accepted: bool
    http_status: int
    store_id: str | None = None


@task(name="check-store-key", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def check_store_key(api: SupportApi, key: SecretStr) -> KeyCheck:
    """`GET /v1/store` with the key, as the store's client calls: accepted (and for which
    store), or refused (401/403)."""
    async with api.get_client() as client:
        response = await exchange(
            "support api",
            lambda: client.get(
                STORE_PATH, headers={"Authorization": f"Bearer {key.get_secret_value()}"}
            ),
            check=False,
        )
    store = None
    if response.status_code < 400:
        with contextlib.suppress(ValueError, AttributeError):
            store = str(response.json().get("store_id") or "") or None
    elif response.status_code >= 500:
        raise TransientError(f"support api: HTTP {response.status_code} checking a store key")
    return KeyCheck(
        accepted=response.status_code < 400, http_status=response.status_code, store_id=store
    )


class ChatProbe(BaseModel):
    """One live chat through the app (it calls the LLM with the app's own key)."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    http_status: int
    error: str | None = None
    model: str | None = None


@task(name="post-support-chat", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def post_chat(api: SupportApi, intent: str = "product_question") -> ChatProbe:
    """`POST /v1/chat`: a live completion through the app, as a customer's widget sends it."""
    async with api.get_client() as client:
        try:
            response = await exchange(
                "support api",
                lambda: client.post(CHAT_PATH, json={"intent": intent}),
                check=False,
            )
        except TransientError as exc:
            return ChatProbe(ok=False, http_status=0, error=str(exc)[:200])
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    body = body if isinstance(body, dict) else {}
    error = body.get("error")
    return ChatProbe(
        ok=response.status_code < 400 and not error,
        http_status=response.status_code,
        error=str(error)[:200] if error else None,
        model=str(body["model"]) if body.get("model") else None,
    )
