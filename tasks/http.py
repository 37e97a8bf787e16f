"""One HTTP exchange, mapped onto the runbook's error tree and retried once when it is safe.

    could not connect (ConnectError, ConnectTimeout, PoolTimeout)   → TransientError: nothing left
    read/write timeout, dropped connection, protocol error         → TransientError (a read)
                                                                     OutcomeUnknown (a mutation)
    5xx                                                            → TransientError (a read)
                                                                     OutcomeUnknown (a mutation)
    429                                                            → RateLimited(retry_after from
                                                                     Retry-After / retry-after-ms)
    401 / 403                                                      → NotAuthorized
    other 4xx                                                      → PermanentError

A mutation is sent once: once its request has left, a lost answer is `OutcomeUnknown`, which no
retry here re-sends (the safety core reconciles by reading the platform). A connection that was
never opened, or a 429 (the server refused it before doing anything), may be retried.

Messages name the service, the status and a short public reason — never a URL (a Slack webhook
URL is itself a secret), a header or a request body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from runbook.errors import (
    NotAuthorized,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    RunbookError,
    TransientError,
)
from runbook.retry import retrying

T = TypeVar("T")
# Raised before a byte of the request was written: safe to send again, even a mutation.
NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms` wins, as OpenAI's SDK does)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue
    return None


def short_reason(response: httpx.Response, limit: int = 160) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit]


def unknown(service: str, what: str) -> OutcomeUnknown:
    """The error for a mutation whose request left and whose answer was lost."""
    return OutcomeUnknown(f"{service}: {what} after the change was sent; it may have been applied")


def raise_for_status(response: httpx.Response, service: str, *, mutation: bool = False) -> None:
    """Raise the matching `RunbookError` for a non-2xx answer."""
    code = response.status_code
    if code < 400:
        return
    if code == 429:
        raise RateLimited(f"{service}: HTTP 429 rate limited", retry_after(response.headers))
    if code >= 500:
        if mutation:
            raise unknown(service, f"HTTP {code}")
        raise TransientError(f"{service}: HTTP {code}")
    if code in (401, 403):
        raise NotAuthorized(f"{service}: HTTP {code}, credentials refused")
    raise PermanentError(f"{service}: HTTP {code}: {short_reason(response)}")


def transport_error(exc: httpx.TransportError, service: str, *, mutation: bool) -> RunbookError:
    """Map a failure of the exchange itself (no answer)."""
    name = type(exc).__name__
    if isinstance(exc, NOT_SENT):
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(f"{service}: timed out connecting ({name})")
        return TransientError(f"{service}: connection failed ({name})")
    if mutation:
        if isinstance(exc, httpx.TimeoutException):
            return unknown(service, f"timed out waiting for the answer ({name})")
        return unknown(service, f"connection lost ({name})")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{service}: timed out")
    return TransientError(f"{service}: connection failed ({name})")


async def send(
    service: str,
    call: Callable[[], Awaitable[httpx.Response]],
    *,
    check: bool = True,
    mutation: bool = False,
) -> httpx.Response:
    """One attempt of `call` (one request), failures mapped; no retry."""
    try:
        response = await call()
    except httpx.TransportError as exc:
        raise transport_error(exc, service, mutation=mutation) from None
    if check:
        raise_for_status(response, service, mutation=mutation)
    return response


class _Sent(Exception):
    """Carries an `OutcomeUnknown` past `retrying()` (which retries every TransientError)."""

    def __init__(self, error: OutcomeUnknown) -> None:
        super().__init__(str(error))
        self.error = error


async def retry_unless_sent(call: Callable[[], Awaitable[T]], *, attempts: int = 2) -> T:
    """`retrying()` for transient failures, except `OutcomeUnknown`: that is raised at once."""

    async def guarded() -> T:
        try:
            return await call()
        except OutcomeUnknown as exc:
            raise _Sent(exc) from None

    try:
        return await retrying(guarded, attempts=attempts)
    except _Sent as stop:
        raise stop.error from None


async def exchange(
    service: str,
    call: Callable[[], Awaitable[httpx.Response]],
    *,
    check: bool = True,
    mutation: bool = False,
) -> httpx.Response:
    """Run `call` (one request), mapping failures; one retry for transient ones.

    `mutation=True` for a request that changes something and is not idempotent: it is re-sent
    only when it never left (connection refused, connect timeout) or was refused with a 429;
    a lost answer raises `OutcomeUnknown` at once."""
    return await retry_unless_sent(
        lambda: send(service, call, check=check, mutation=mutation), attempts=2
    )
