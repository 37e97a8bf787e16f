"""Railway acts the incident flows share, with their reconcile probes (did it already happen?)."""

from __future__ import annotations

from typing import Any

from blocks.railway import Railway
from tasks import railway


async def set_variable(rw: Railway, name: str, value: str) -> dict[str, Any]:
    """`railway vars set NAME=VALUE` (a redeploy follows, as the runbook's command does)."""
    return (await railway.set_variables(rw, {name: value})).model_dump()


async def variable_is(rw: Railway, name: str, value: str) -> bool:
    return (await railway.get_variable(rw, name)).value == value


async def rolled_back_to(rw: Railway, deployment_id: str, bad_id: str | None) -> bool:
    """Is the live deployment a rollback to `deployment_id` (same commit, not the bad one)?"""
    now = await railway.get_deployments(rw)
    by_id = {d.id: d for d in now.items}
    wanted, live = by_id.get(deployment_id), by_id.get(now.current_id or "")
    return bool(wanted and live and live.commit == wanted.commit and live.id != bad_id)
