"""`runbook approvals`, `runbook approve RUN …`, `runbook reject RUN …`.

Approving from the CLI is the same as the Resume form in the Prefect UI: the answer goes to the
waiting run (a suspended deployment run, or a paused approval-gate run) through
Prefect's resume API, and the flow validates it (approver list,
one-time code, distinct approvers). A run that is no longer paused cannot be resumed twice.
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import typer
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import aresume_flow_run
from rich.console import Console
from rich.table import Table

from runbook import approvals as store
from runbook import killswitch, opsdb

console = Console()


async def waiting() -> list[store.Waiting]:
    async with await opsdb.connect() as conn:
        return await store.waiting(conn)


async def _pauses() -> list[killswitch.Pause]:
    async with await opsdb.connect() as conn:
        return await killswitch.all_pauses(conn)


async def resolve_run(run: str) -> UUID:
    """A full flow-run id, or a unique prefix of a waiting approval's id."""
    try:
        return UUID(run)
    except ValueError:
        pass
    matches = sorted({r.flow_run_id for r in await waiting() if r.flow_run_id.startswith(run)})
    if len(matches) == 1:
        return UUID(matches[0])
    if not matches:
        raise ValueError(f"no waiting approval has a run id starting with {run!r}")
    raise ValueError(f"{run!r} matches {len(matches)} waiting approvals; give more of the id")


async def answer(run: str, run_input: dict[str, Any]) -> str:
    """Resume the paused gate with `run_input`; a clear ValueError when that is not possible."""
    run_id = await resolve_run(run)
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ValueError(f"no flow run {run_id}") from None
    state = flow_run.state
    if state is None or not state.is_paused():
        name = state.name if state else "unknown"
        raise ValueError(f"run {run_id} is not waiting for approval (state: {name})")
    try:
        await aresume_flow_run(run_id, run_input=run_input)
    except Exception as exc:  # Prefect raises several types here; the message is what matters
        raise ValueError(f"run {run_id} could not be resumed: {exc}") from None
    return str(run_id)


def approvals() -> None:
    """List approvals waiting for a human: what each wants to do, since when, and where."""
    from runbook.cli.output import fail
    from runbook.cli.safety import pause_lines

    try:
        rows = asyncio.run(waiting())
        pauses = asyncio.run(_pauses())
    except Exception as exc:
        raise fail(f"cannot read approvals from the ops database: {exc}", 1) from None
    for line in pause_lines(pauses):
        console.print(f"[bold red]{line}[/] — approved acts are held until `runbook resume`")
    if not rows:
        console.print("no approvals waiting")
        return
    table = Table(title="Waiting for approval", title_justify="left")
    for column in ("run", "incident", "action", "target", "waiting", "expires", "link"):
        table.add_column(column)
    now = datetime.now(UTC)
    for r in rows:
        minutes = (now - r.requested_at).total_seconds() / 60
        table.add_row(
            r.flow_run_id,
            r.incident_id,
            r.action,
            r.target,
            f"{minutes:.0f} min",
            f"{r.expires_at:%H:%M:%S} UTC",
            r.ui_url or "",
        )
    console.print(table)


def approve(
    run: str = typer.Argument(..., help="the waiting run id (or a unique prefix)"),
    approver: str = typer.Option(..., "--approver", help="your name, as in the Policy"),
    reason: str = typer.Option(..., "--reason", help="why (goes into the timeline)"),
    code: str = typer.Option("", "--code", help="the one-time code sent to you"),
) -> None:
    """Approve a waiting destructive action."""
    from runbook.cli.output import fail, need_prefect_api

    need_prefect_api("runbook approve")
    payload: dict[str, Any] = {"approve": True, "approver": approver, "reason": reason}
    if code:  # only a coded form has the field (Prefect refuses unknown ones)
        payload["code"] = code
    try:
        run_id = asyncio.run(answer(run, payload))
    except ValueError as exc:
        raise fail(str(exc), 1) from None
    console.print(f"sent approval by {approver} to run {run_id}; the flow checks it and acts")


def reject(
    run: str = typer.Argument(..., help="the waiting run id (or a unique prefix)"),
    reason: str = typer.Option(..., "--reason", help="why (goes into the timeline)"),
    approver: str = typer.Option("", "--approver", help="your name (default: your login)"),
) -> None:
    """Reject a waiting destructive action: nothing is changed and the incident escalates."""
    from runbook.cli.output import fail, need_prefect_api

    need_prefect_api("runbook reject")
    name = approver or getpass.getuser()
    payload: dict[str, Any] = {"approve": False, "approver": name, "reason": reason}
    try:
        run_id = asyncio.run(answer(run, payload))
    except ValueError as exc:
        raise fail(str(exc), 1) from None
    console.print(f"sent rejection by {name} to run {run_id}")
