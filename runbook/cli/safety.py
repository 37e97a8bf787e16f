"""`runbook pause`, `runbook resume`, `runbook status`: the kill switch and what waits.

`pause` is instant: every act reads it right before it runs (no redeploy, no restart). While it
holds, acts are recorded as `held` and the incident pages.
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime

import typer
from rich.console import Console

from runbook import approvals, killswitch, notify_queue, opsdb

console = Console()


async def _pause(target: str, reason: str, who: str) -> None:
    async with await opsdb.connect() as conn:
        await killswitch.pause(conn, reason, who, target)


async def _resume(target: str | None) -> int:
    async with await opsdb.connect() as conn:
        return await killswitch.resume(conn, target)


def pause(
    reason: str = typer.Option(..., "--reason", help="why acting stops (shown in every page)"),
    target: str = typer.Option(
        killswitch.ALL, "--target", help="one target (e.g. railway:SERVICE_ID); default: all"
    ),
    who: str = typer.Option("", "--as", help="your name (default: your login)"),
) -> None:
    """Kill switch: stop every act (or one target's) at once, until `runbook resume`."""
    from runbook.cli.output import fail

    if not reason.strip():
        raise fail("--reason must say why acting stops")
    name = who or getpass.getuser()
    try:
        asyncio.run(_pause(target, reason.strip(), name))
    except Exception as exc:
        raise fail(f"cannot write the pause to the ops database: {exc}", 1) from None
    what = "every target" if target == killswitch.ALL else target
    console.print(f"paused acting on {what}: acts are held and page until `runbook resume`")


def resume(
    target: str | None = typer.Option(
        None, "--target", help="lift only this target's pause (default: every pause)"
    ),
) -> None:
    """Lift the kill switch: acts run again (each still under its approvals and budgets)."""
    from runbook.cli.output import fail

    try:
        lifted = asyncio.run(_resume(target))
    except Exception as exc:
        raise fail(f"cannot read the ops database: {exc}", 1) from None
    if not lifted:
        console.print("nothing was paused")
        return
    console.print(f"resumed: {lifted} pause(s) lifted")


async def _status() -> tuple[list[killswitch.Pause], int, int]:
    async with await opsdb.connect() as conn:
        pauses = await killswitch.all_pauses(conn)
        waiting = await approvals.count_waiting(conn)
        pending = await notify_queue.pending_count(conn)
    return pauses, waiting, pending


def pause_lines(pauses: list[killswitch.Pause]) -> list[str]:
    now = datetime.now(UTC)
    return [
        f"PAUSED {'(all targets)' if p.target == killswitch.ALL else p.target} by {p.paused_by}"
        f" {int((now - p.paused_at).total_seconds() // 60)} min ago: {p.reason}"
        for p in pauses
    ]


def status() -> None:
    """The kill switch, approvals waiting for a human, notifications not yet delivered."""
    from runbook.cli.output import fail

    try:
        pauses, waiting, pending = asyncio.run(_status())
    except Exception as exc:
        raise fail(f"cannot read the ops database: {exc}", 1) from None
    for line in pause_lines(pauses) or ["acting: on (no kill switch)"]:
        console.print(f"[bold red]{line}[/]" if line.startswith("PAUSED") else line)
    console.print(f"approvals waiting: {waiting} (`runbook approvals` lists them)")
    console.print(f"notifications not yet delivered: {pending}")
