"""Faults on the wire of a vendor API, not on the platform: a request that was applied and whose
answer was lost, or a vendor's hiccup. They prove a client sends a mutation once.

    railway-timeout-after-apply  the next Railway mutation is applied (journaled), then its
                                 answer is held `hold_s` (default 30 s) — past the client's
                                 read timeout; the hold ends early when the client hangs up
    railway-500                  the next Railway request is executed (a mutation is applied),
                                 then answered HTTP 500
    railway-transient-error      the next Railway request is executed, then answered 200 with
                                 Railway's transient GraphQL error ("Problem processing request",
                                 extensions.code INTERNAL_SERVER_ERROR)
    rds-500-after-apply          the next RebootDBInstance/ModifyDBInstance of the managed
                                 instance is applied, then answered HTTP 500 InternalFailure
                                 (botocore's own retry, were it enabled, would send it again)
    rds-timeout-after-apply      … applied, then its answer is held `hold_s`

Each is armed for the next `count` matching requests (default 1) and, with `seconds`, expires;
`on` narrows a Railway fault to `query` or `mutation` requests (the timeout is mutations only).
`clear`/`reset` disarm them. Journal entries a faulted request made carry `"fault": name`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

WIRE_FAULTS: dict[str, str] = {
    "railway-timeout-after-apply": "mutation",
    "railway-500": "any",
    "railway-transient-error": "any",
    "rds-500-after-apply": "mutation",
    "rds-timeout-after-apply": "mutation",
}
SCOPES = ("any", "query", "mutation")
WIRE_OPTIONS = ("count", "hold_s", "on")  # control-body fields only wire faults take
DEFAULT_HOLD_S = 30.0
MAX_HOLD_S = 300.0
MAX_COUNT = 100


def is_wire(name: object) -> bool:
    return isinstance(name, str) and name in WIRE_FAULTS


class WireFaultError(ValueError):
    """A malformed request to arm a wire fault (the message is one clear line)."""


@dataclass
class Armed:
    name: str
    remaining: int
    on: str
    hold_s: float
    expires_at: float | None
    fired: int = 0


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise WireFaultError(f"{name} must be a number in ({low:g}, {high:g}]")
    return float(value)


class WireFaults:
    """What is armed, and `take()` to fire one (one asyncio loop: no locks)."""

    def __init__(self) -> None:
        self.armed: dict[str, Armed] = {}

    def arm(
        self,
        name: str,
        *,
        count: Any = None,
        seconds: Any = None,
        hold_s: Any = None,
        on: Any = None,
    ) -> Armed:
        if name not in WIRE_FAULTS:
            raise WireFaultError(f"unknown wire fault {name!r}")
        times = 1 if count is None else _number(count, "count", 0, MAX_COUNT)
        if times != int(times):
            raise WireFaultError("count must be a whole number")
        scope = WIRE_FAULTS[name] if on is None else on
        if scope not in SCOPES or (WIRE_FAULTS[name] == "mutation" and scope != "mutation"):
            allowed = "mutation" if WIRE_FAULTS[name] == "mutation" else ", ".join(SCOPES)
            raise WireFaultError(f"on must be one of: {allowed}")
        hold = DEFAULT_HOLD_S if hold_s is None else _number(hold_s, "hold_s", 0, MAX_HOLD_S)
        expires = None
        if seconds is not None:
            expires = time.monotonic() + _number(seconds, "seconds", 0, 86400)
        armed = Armed(name, int(times), scope, hold, expires)
        self.armed[name] = armed
        return armed

    def _live(self, armed: Armed) -> bool:
        expired = armed.expires_at is not None and time.monotonic() >= armed.expires_at
        if expired or armed.remaining <= 0:
            self.armed.pop(armed.name, None)
            return False
        return True

    def take(self, names: tuple[str, ...], mutation: bool) -> Armed | None:
        """Fire the first armed fault of `names` that matches this request, if any."""
        for name in names:
            armed = self.armed.get(name)
            if armed is None or not self._live(armed):
                continue
            if armed.on != "any" and armed.on != ("mutation" if mutation else "query"):
                continue
            armed.remaining -= 1
            armed.fired += 1
            self._live(armed)
            return armed
        return None

    def disarm(self, name: str | None = None) -> list[str]:
        names = [name] if name else list(self.armed)
        return [n for n in names if self.armed.pop(n, None) is not None]

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "name": a.name,
                "remaining": a.remaining,
                "on": a.on,
                "hold_s": a.hold_s,
                "expires_in": round(a.expires_at - now, 1) if a.expires_at else None,
            }
            for a in list(self.armed.values())
            if self._live(a)
        ]


def arm_from(wire: WireFaults, fault: Any, body: dict[str, Any]) -> str | None:
    """Arm `fault` from a `/control/inject` body; the reason it was refused, or None."""
    if not is_wire(fault):
        return f"{', '.join(o for o in WIRE_OPTIONS if o in body)}: wire faults only"
    if body.get("target") is not None:
        return "target applies to integration-outage only"
    try:
        wire.arm(
            fault,
            count=body.get("count"),
            seconds=body.get("seconds"),
            hold_s=body.get("hold_s"),
            on=body.get("on"),
        )
    except WireFaultError as exc:
        return str(exc)
    return None


def mark(journal: list[dict[str, Any]], since: int, armed: Armed) -> None:
    """Tag the journal entries the faulted request made."""
    for entry in journal[since:]:
        entry["fault"] = armed.name


async def hold(request: Request, seconds: float) -> None:
    """Keep the answer back for `seconds`, or until the client has hung up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)
