"""One HTTP exchange, mapped onto the runbook's error tree and retried once when transient.

    connect error / timeout / 5xx  → TransientError
    429                            → RateLimited(retry_after from Retry-After / retry-after-ms)
    401 / 403                      → NotAuthorized
    other 4xx                      → PermanentError

Messages name the service, the status and a short public reason — never a URL (a Slack webhook
URL is itself a secret), a header or a request body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from runbook.errors import NotAuthorized, PermanentError, RateLimited, TransientError
from runbook.retry import retrying


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


def raise_for_status(response: httpx.Response, service: str) -> None:
    """Raise the matching `RunbookError` for a non-2xx answer."""
    code = response.status_code
    if code < 400:
        return
    if code == 429:
        raise RateLimited(f"{service}: HTTP 429 rate limited", retry_after(response.headers))
    if code >= 500:
        raise TransientError(f"{service}: HTTP {code}")
    if code in (401, 403):
        raise NotAuthorized(f"{service}: HTTP {code}, credentials refused")
    raise PermanentError(f"{service}: HTTP {code}: {short_reason(response)}")


async def exchange(
    service: str, call: Callable[[], Awaitable[httpx.Response]], *, check: bool = True
) -> httpx.Response:
    """Run `call` (one request), mapping failures; one retry for transient ones."""

    async def once() -> httpx.Response:
        try:
            response = await call()
        except httpx.TimeoutException:
            raise TransientError(f"{service}: timed out") from None
        except httpx.TransportError as exc:
            raise TransientError(f"{service}: connection failed ({type(exc).__name__})") from None
        if check:
            raise_for_status(response, service)
        return response

    return await retrying(once, attempts=2)
