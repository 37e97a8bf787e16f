"""One retry policy for every transient failure (tenacity), with one switch for tests.

`RUNBOOK_RETRY_FAST=1` makes every wait zero so tests exercise the retry path instantly.
A server's `Retry-After` is honoured (capped by the total budget).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from runbook.errors import OutcomeUnknown, RateLimited, TransientError
from runbook.settings import get_settings

T = TypeVar("T")


def _fast() -> bool:
    return get_settings().retry_fast


def _wait(state: RetryCallState) -> float:
    if _fast():
        return 0.0
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return min(exc.retry_after, 30.0)
    return float(wait_exponential_jitter(initial=0.5, max=8.0, jitter=0.5)(state))


async def retrying(
    call: Callable[[], Awaitable[T]], *, attempts: int = 4, total_seconds: float = 30.0
) -> T:
    """Run `call` until it succeeds, retrying only `TransientError`s (never `OutcomeUnknown`),
    within a bounded time."""
    async for attempt in AsyncRetrying(
        # a mutation whose answer was lost is never re-sent blind (the safety core reconciles)
        retry=retry_if_exception_type(TransientError) & retry_if_not_exception_type(OutcomeUnknown),
        stop=stop_after_attempt(attempts) | stop_after_delay(total_seconds),
        wait=_wait,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover
