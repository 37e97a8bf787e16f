"""Verify after every act; undo a reversible act whose verification fails, then escalate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from runbook import ledger, opsdb
from runbook.actions import ActionRequest

Verify = Callable[[], Awaitable[tuple[bool, str]]]
Undo = Callable[[], Awaitable[dict[str, Any]]]
Pager = Callable[[str, dict[str, Any]], Awaitable[bool | None]]


class VerifyOutcome(BaseModel):
    verified: bool
    detail: str
    undone: bool = False
    escalated: bool = False


async def verify_or_undo(
    request: ActionRequest,
    *,
    verify: Verify,
    page: Pager,
    undo: Undo | None = None,
    window_s: float = 60.0,
    interval_s: float = 5.0,
) -> VerifyOutcome:
    """Poll `verify` until it passes or `window_s` ends; on failure undo (if given) and page."""
    deadline = time.monotonic() + window_s
    ok, detail = await verify()
    while not ok and time.monotonic() + interval_s <= deadline:
        await asyncio.sleep(interval_s)
        ok, detail = await verify()
    key = request.idempotency_key
    async with await opsdb.connect() as conn:
        if ok:
            await ledger.mark(conn, key, "done", verified=True)
            await ledger.event(conn, request.incident_id, "verified", detail, key=key)
            return VerifyOutcome(verified=True, detail=detail)
        await ledger.event(
            conn, request.incident_id, "failed", f"verification failed: {detail}", key=key
        )
        undone = False
        if undo is not None:
            try:
                outcome = await undo()
            except Exception as exc:  # the undo failed too: record it and still page
                await ledger.mark(
                    conn, key, "done", verified=False, outcome={"undo_error": str(exc)[:300]}
                )
                await ledger.event(
                    conn,
                    request.incident_id,
                    "failed",
                    f"undo of {request.action} failed: {exc}",
                    key=key,
                )
            else:
                await ledger.mark(conn, key, "undone", verified=False, outcome=outcome)
                await ledger.event(
                    conn,
                    request.incident_id,
                    "undone",
                    f"undid {request.action} on {request.target}",
                    key=key,
                    detail=outcome,
                )
                undone = True
        else:
            await ledger.mark(conn, key, "done", verified=False)
        summary = f"{request.action} on {request.target} did not fix the problem ({detail})" + (
            "; it was undone" if undone else ""
        )
        await page(summary, {"key": key, "incident": request.incident_id})
        await ledger.event(conn, request.incident_id, "escalated", summary, key=key)
    return VerifyOutcome(verified=False, detail=detail, undone=undone, escalated=True)
