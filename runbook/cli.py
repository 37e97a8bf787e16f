"""The `runbook` command line (typer + rich).

Exit codes: 0 fine; 1 something could not be checked or a run did not reach its goal;
2 something is critical; 64 bad usage or input (one clear line, never a traceback).
"""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.console import Console
from rich.table import Table

from runbook.domain import HealthReport, Status

EXIT_OK, EXIT_UNAVAILABLE, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2, 64

app = typer.Typer(
    name="runbook",
    help="Automated remediation of the support platform's operations runbook, on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

_STYLE = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.CRITICAL: "bold red",
    Status.UNAVAILABLE: "magenta",
}


@app.callback()
def root() -> None:
    """Automated remediation of the support platform's operations runbook, on Prefect."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def render_report(report: HealthReport) -> Table:
    table = Table(title=f"Health — overall {report.status.value}", title_justify="left")
    for column in ("check", "component", "status", "summary", "ms"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for c in report.checks:
        style = _STYLE[c.status]
        table.add_row(
            c.name, c.component, f"[{style}]{c.status.value}[/]", c.summary,
            f"{c.duration_ms:.0f}",
        )
    return table


def exit_code_for(report: HealthReport) -> int:
    if report.with_status(Status.CRITICAL):
        return EXIT_CRITICAL
    if report.with_status(Status.UNAVAILABLE):
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


@app.command()
def intake(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8080, help="port to bind"),
) -> None:
    """Serve the alert intake (webhooks from Alertmanager, Grafana, Sentry, PagerDuty, …)."""
    from intake.cli import run

    run(host, port)


def _mount_subcommands() -> None:
    from sandbox.cli import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox")


_mount_subcommands()


def main() -> None:
    """Console-script entry point: no tracebacks for anything a user can cause."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
