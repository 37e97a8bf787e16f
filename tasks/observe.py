"""Turning an observation attempt into a `CheckResult`: timing, and failures as "unavailable".

A check that cannot reach what it observes returns `unavailable` with a one-line reason; it never
raises. Reasons are built from exception types and messages that carry no credentials (psycopg,
redis and httpx name host and port, never the password).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from runbook.domain import CheckResult, Status


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free reason for a failed observation."""
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    text = str(exc).strip().splitlines()
    reason = text[0][:200] if text else type(exc).__name__
    return f"{type(exc).__name__}: {reason}"


async def observe(
    name: str, component: str, probe: Callable[[], Awaitable[CheckResult]]
) -> CheckResult:
    """Run `probe`, stamp its duration, and map any failure to `unavailable`."""
    started = time.perf_counter()
    try:
        result = await probe()
    except Exception as exc:  # an observation must never crash the flow
        result = CheckResult.unavailable(name, component, describe_error(exc))
    elapsed = (time.perf_counter() - started) * 1000
    return result.model_copy(update={"duration_ms": round(elapsed, 1)})


def result(
    name: str, component: str, status: Status, summary: str, **details: object
) -> CheckResult:
    return CheckResult(
        name=name, component=component, status=status, summary=summary, details=details
    )
