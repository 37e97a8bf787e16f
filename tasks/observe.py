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


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free reason for a failed observation."""
    chain = _chain(exc)
    lines = str(exc).strip().splitlines()
    detail = lines[0][:200] if lines else type(exc).__name__
    text = " ".join(str(e) for e in chain).lower()
    if (
        any(isinstance(e, ConnectionRefusedError) for e in chain)
        or "refused" in text
        or ("error 111" in text)
    ):
        return f"connection refused ({detail})"
    if (
        any(
            isinstance(e, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError)
            for e in chain
        )
        or "timeout" in text
        or "timed out" in text
    ):
        return f"timed out ({detail})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({detail})"
    return f"{type(exc).__name__}: {detail}"


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
