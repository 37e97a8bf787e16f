"""The `runbook` command line (typer + rich).

Exit codes: 0 fine; 1 something could not be checked or a run did not reach its goal;
2 something is critical; 64 bad usage or input (one clear line, never a traceback).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import typer
from pydantic import BaseModel
from rich.table import Table

from runbook import redact
from runbook.cli.output import (
    EXIT_CRITICAL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    console,
    err_console,
    fail,
    need_prefect_api,
)
from runbook.domain import HealthReport, Status

__all__ = ["EXIT_CRITICAL", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "app", "fail", "main"]

app = typer.Typer(
    name="runbook",
    help="Automated remediation of the support platform's operations runbook, on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STYLE = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.CRITICAL: "bold red",
    Status.UNAVAILABLE: "magenta",
}


@app.callback()
def root() -> None:
    """Automated remediation of the support platform's operations runbook, on Prefect."""


def render_report(report: HealthReport) -> Table:
    table = Table(title=f"Health — overall {report.status.value}", title_justify="left")
    for column in ("check", "component", "status", "summary", "ms"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for c in report.checks:
        style = _STYLE[c.status]
        table.add_row(
            c.name,
            c.component,
            f"[{style}]{c.status.value}[/]",
            c.summary,
            f"{c.duration_ms:.0f}",
        )
    return table


def exit_code_for(report: HealthReport) -> int:
    if report.with_status(Status.CRITICAL):
        return EXIT_CRITICAL
    # an optional capability that is absent (pg_stat_statements) does not fail the command
    if any(not c.details.get("optional") for c in report.with_status(Status.UNAVAILABLE)):
        return EXIT_UNAVAILABLE
    return EXIT_OK


@app.command()
def check(
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Run the Health Checks section now and print the report.

    Exit 0 when nothing is critical or unreachable, 1 when a check could not observe its target,
    2 when anything is critical."""
    from flows.health import collect_health, load_targets

    async def run() -> HealthReport:
        targets = await load_targets()
        return await collect_health(*targets, as_tasks=False)

    report = asyncio.run(run())
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        console.print(render_report(report))
    raise typer.Exit(exit_code_for(report))


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`k=v` pairs; values are JSON when they parse as JSON (numbers, booleans), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {pair!r} is not of the form key=value")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


@app.command()
def run(
    flow_name: str = typer.Argument(..., metavar="FLOW", help="e.g. health-check"),
    dry_run: bool = typer.Option(False, "--dry-run", help="decide and plan, change nothing"),
    param: list[str] = typer.Option([], "--param", help="flow parameter key=value (repeatable)"),
    requested_by: str = typer.Option(
        "", "--as", help="who asks for this run (default: your login); they cannot approve it"
    ),
) -> None:
    """Run one runbook flow now, in this process, against the Prefect API."""
    import getpass
    import os

    from flows.registry import load_flow
    from runbook.settings import get_settings

    need_prefect_api(f"runbook run {flow_name}")
    os.environ["RUNBOOK_REQUESTED_BY"] = requested_by.strip() or getpass.getuser()
    get_settings.cache_clear()

    try:
        flow_obj = load_flow(flow_name)
        params = parse_params(param)
    except (KeyError, ValueError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    params["dry_run"] = dry_run
    try:
        state = asyncio.run(flow_obj(**params, return_state=True))
    except TypeError as exc:
        raise fail(f"bad parameters for {flow_name}: {exc}") from None
    if state.is_completed():
        console.print(f"[green]{flow_name} completed[/]: {state.message or 'ok'}")
        value = state.result(raise_on_failure=False)
        if isinstance(value, HealthReport):
            console.print(render_report(value))
            raise typer.Exit(exit_code_for(value))
        if isinstance(value, BaseModel):
            sys.stdout.write(value.model_dump_json(indent=2) + "\n")
            # the run completed, but did it reach its goal?
            dump = value.model_dump()
            if dump.get("verified") is False or dump.get("action_status") in {
                "rejected",
                "refused",
                "failed",
            }:
                raise typer.Exit(EXIT_UNAVAILABLE)
        raise typer.Exit(EXIT_OK)
    raise fail(f"{flow_name} ended {state.type.value}: {state.message}", EXIT_UNAVAILABLE)


@app.command()
def demo(
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help="approve waiting actions through the API after 2 s"
    ),
    scenario: list[str] | None = typer.Option(
        None, "--scenario", help="run only this scenario (repeatable; --list shows them)"
    ),
    fault_wait: float = typer.Option(
        20.0, "--fault-wait", help="at most this many seconds of symptoms before each alert"
    ),
    list_: bool = typer.Option(
        False, "--list", help="list the scenarios and the runbook section each plays"
    ),
    keep: bool = typer.Option(
        False, "--keep", help="leave the stack running to explore the UI (Ctrl-C stops it)"
    ),
) -> None:
    """A game day for the whole runbook: start everything locally (Prefect, sandbox, intake,
    flows), then play each runbook section's scenario — a fault and its alert, or an operator's
    `runbook run` — answering every approval; Ctrl-C stops everything it started (exit 130)."""
    import tempfile
    from pathlib import Path

    from runbook.cli.demo import choose, run_demo, scenario_table

    if list_:
        from rich.console import Console

        wide = console if console.is_terminal else Console(width=200)
        wide.print(scenario_table())  # full names, also when piped
        raise typer.Exit(EXIT_OK)
    try:
        choose(scenario)  # an unknown name: one line, before anything starts
    except ValueError as exc:
        raise fail(str(exc)) from None
    _need_sandbox()

    home = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    try:
        code = run_demo(
            auto_approve=auto_approve,
            scenario=scenario or None,
            home=home,
            fault_wait_s=fault_wait,
            console=console,
            keep=keep,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    except RuntimeError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    raise typer.Exit(code)


_INSECURE = typer.Option(
    False,
    "--insecure-prefect-api",
    help="start even though the Prefect API is off this machine and has no auth",
)


def refuse_untrusted_start(insecure_prefect_api: bool, *, acting: bool) -> None:
    """The trust boundary at start-up (docs/approvals.md): a Prefect API reachable without
    credentials, a short approval secret, an approver without a channel → one line, exit 64."""
    from runbook.settings import get_settings
    from runbook.trust import acting_process_problems, current_prefect_api_problem

    problems = [] if insecure_prefect_api else [current_prefect_api_problem()]
    if acting:
        problems += acting_process_problems(get_settings())
    for problem in problems:
        if problem:
            raise fail(f"refusing to start: {problem}")


@app.command()
def serve(
    no_schedules: bool = typer.Option(False, "--no-schedules", help="alerts and operators only"),
    insecure_prefect_api: bool = _INSECURE,
) -> None:
    """Serve every runbook flow as a deployment ("<flow>/runbook") from this process."""
    from prefect.settings import PREFECT_API_URL

    from flows.serve import serve as serve_all

    if not PREFECT_API_URL.value():
        raise fail("PREFECT_API_URL is not set: serving needs a running Prefect server")
    refuse_untrusted_start(insecure_prefect_api, acting=True)
    asyncio.run(serve_all(with_schedules=not no_schedules))


@app.command()
def sweep(
    every: float = typer.Option(0, "--every", help="repeat every N seconds (0: sweep once)"),
    insecure_prefect_api: bool = _INSECURE,
) -> None:
    """Time out expired approvals of suspended runs (`runbook serve` does this by itself; run it
    next to work-pool workers)."""
    from prefect.settings import PREFECT_API_URL

    from flows.approval_sweeper import run_sweeper, sweep_once

    if not PREFECT_API_URL.value():
        raise fail("PREFECT_API_URL is not set: sweeping needs a running Prefect server")
    refuse_untrusted_start(insecure_prefect_api, acting=True)
    if every > 0:
        asyncio.run(run_sweeper(every))
        return
    swept = asyncio.run(sweep_once())
    console.print(f"{len(swept)} expired approval(s) answered 'timed out'")


@app.command()
def intake(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8080, help="port to bind"),
    insecure_prefect_api: bool = _INSECURE,
) -> None:
    """Serve the alert intake (webhooks from Alertmanager, Grafana, Sentry, PagerDuty, …)."""
    from intake.cli import run

    refuse_untrusted_start(insecure_prefect_api, acting=False)
    run(host, port)


def _need_sandbox() -> None:
    """The simulated platform (its own extra)."""
    from runbook.cli.packages import sandbox_missing

    if (problem := sandbox_missing()) is not None:
        raise fail(problem)


def _mount_subcommands() -> None:
    from runbook.cli.approvals import approvals, approve, reject
    from runbook.cli.blocks import app as blocks_app
    from runbook.cli.safety import pause, resume, status
    from sandbox.cli import app as sandbox_app

    app.command()(approvals)
    app.command()(approve)
    app.command()(reject)
    app.command()(pause)
    app.command()(resume)
    app.command()(status)
    app.add_typer(sandbox_app, name="sandbox", callback=_need_sandbox)
    app.add_typer(blocks_app, name="blocks")


_mount_subcommands()


def main() -> None:
    """Console-script entry point: no tracebacks for anything a user can cause."""
    from runbook.cli.packages import foreign_packages

    for problem in foreign_packages():
        err_console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # anything unforeseen: one line, never a traceback
        first = redact.mask((str(exc).strip().splitlines() or [type(exc).__name__])[0][:300])
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {first}", highlight=False)
        sys.exit(1)
