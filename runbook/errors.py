"""The one exception tree of the project.

    RunbookError
    ├── TransientError        retried with backoff: connection refused, timeouts, 5xx, 429
    │   ├── RateLimited       a 429; carries `retry_after` seconds when the server said so
    │   └── OutcomeUnknown    a mutation was sent and its answer was lost (timeout, 5xx, a
    │                         transient GraphQL error): never re-sent blind, reconciled by
    │                         reading the platform
    ├── PermanentError        never retried: 400, 401/403, insufficient_quota, GraphQL errors
    │   └── NotAuthorized     credentials were refused
    └── ConfigurationError    our own settings are missing or wrong (a human must fix them)

Messages never contain secrets: clients build them from status codes and public fields only.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class of every error this project raises on purpose."""


class TransientError(RunbookError):
    """A failure that may go away on its own; retry with backoff."""


class RateLimited(TransientError):
    """The remote side said "slow down" (HTTP 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """A mutation may or may not have been applied: the request left and no clear answer came.

    Never retried by the transport; the safety core reads the platform (reconcile) to learn
    whether it happened. A connection that could not be opened is *not* this: nothing was sent,
    so that stays a plain `TransientError` and may be retried."""


class PermanentError(RunbookError):
    """A failure that will happen again if retried."""


class NotAuthorized(PermanentError):
    """The credentials were missing or refused."""


class ConfigurationError(RunbookError):
    """A setting is missing or malformed."""
