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

from runbook import approvals, killswitch, maintenance, notify_queue, opsdb
from runbook.policy import PolicyRules

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


async def _status() -> tuple[list[killswitch.Pause], int, int, list[str]]:
    async with await opsdb.connect() as conn:
        pauses = await killswitch.all_pauses(conn)
        waiting = await approvals.count_waiting(conn)
        pending = await notify_queue.pending_count(conn)
        current = await maintenance.current_window(conn)
        notice = await maintenance.next_notice(conn, datetime.now(UTC))
    policy, scheduled = await _next_scheduled()
    return pauses, waiting, pending, window_lines(current, notice, scheduled, policy)


async def _next_scheduled() -> tuple[PolicyRules, datetime | None]:
    """The Policy (window end and length) and the next start of the scheduled-maintenance
    schedule in prefect.yaml (None when it has none, or the file cannot be read)."""
    from prefect.server.schemas.schedules import CronSchedule

    from blocks.policy import Policy
    from flows.serve import schedules_from_yaml
    from runbook.errors import RunbookError

    try:
        policy: PolicyRules = await Policy.resolve()
    except Exception:  # no Prefect API: the defaults and the environment's floor
        policy = PolicyRules()
    try:
        crons = schedules_from_yaml().get("scheduled-maintenance") or []
    except (RunbookError, OSError):
        return policy, None
    starts = []
    for cron in crons:
        dates = await CronSchedule(cron=cron.cron, timezone=cron.timezone).get_dates(
            n=1, start=datetime.now(UTC)
        )
        starts += [datetime.fromtimestamp(d.timestamp(), UTC) for d in dates]
    return policy, min(starts, default=None)


def window_lines(
    current: maintenance.WindowRow | None,
    notice: maintenance.Notice | None,
    scheduled: datetime | None,
    policy: PolicyRules,
) -> list[str]:
    """The current maintenance window (alerts suppressed) and the next one, with its notice."""
    if current is not None:
        lines = [
            f"MAINTENANCE WINDOW OPEN ({current.kind}: {current.reason}) since"
            f" {current.starts_at.astimezone(UTC):%H:%M}, until"
            f" {current.ends_at.astimezone(UTC):%a %H:%M} UTC: alerts are suppressed"
        ]
    else:
        lines = ["maintenance window: none open (alerts are not suppressed)"]
    end, minutes = policy.maintenance_window_end_utc, policy.maintenance_window_minutes
    upcoming: list[maintenance.Window] = []
    if scheduled is not None:
        upcoming.append(
            maintenance.window_of(scheduled, end, minutes)
            or maintenance.next_window(scheduled, end, minutes)
        )
    if notice is not None:
        upcoming.append(maintenance.Window(start=notice.window_start, end=notice.window_end))
    if not upcoming:
        return [*lines, "next maintenance window: none scheduled"]
    nearest = min(upcoming, key=lambda w: w.start)
    text = f"next maintenance window: {nearest.text()}"
    if notice is not None and notice.window_start == nearest.start:
        text += f" (notice posted {notice.noticed_at.astimezone(UTC):%a %H:%M} UTC"
        who = ", ".join(notice.approved_by)
        text += f"; steps approved ahead by {who})" if notice.approved_at else ")"
    else:
        text += " (notice not posted yet)"
    return [*lines, text]


def pause_lines(pauses: list[killswitch.Pause]) -> list[str]:
    now = datetime.now(UTC)
    return [
        f"PAUSED {'(all targets)' if p.target == killswitch.ALL else p.target} by {p.paused_by}"
        f" {int((now - p.paused_at).total_seconds() // 60)} min ago: {p.reason}"
        for p in pauses
    ]


def status() -> None:
    """The kill switch, approvals waiting for a human, notifications not yet delivered, and the
    current and next maintenance window."""
    from runbook.cli.output import fail

    try:
        pauses, waiting, pending, windows = asyncio.run(_status())
    except Exception as exc:
        raise fail(f"cannot read the ops database: {exc}", 1) from None
    for line in pause_lines(pauses) or ["acting: on (no kill switch)"]:
        console.print(f"[bold red]{line}[/]" if line.startswith("PAUSED") else line)
    console.print(f"approvals waiting: {waiting} (`runbook approvals` lists them)")
    console.print(f"notifications not yet delivered: {pending}")
    for line in windows:
        console.print(f"[bold yellow]{line}[/]" if line.startswith("MAINTENANCE") else line)
