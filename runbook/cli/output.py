"""What every verb prints: the consoles, exit codes and the one-line error."""

from __future__ import annotations

import typer
from rich.console import Console

EXIT_OK, EXIT_UNAVAILABLE, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2, 64

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def need_prefect_api(what: str) -> None:
    """Verbs that talk to Prefect refuse with one line when no server is configured (instead of
    Prefect silently starting a temporary one)."""
    import os

    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    hint = "export PREFECT_API_URL=http://127.0.0.1:4200/api"
    demo = os.environ.get("RUNBOOK_HOME")
    if demo:
        hint += f" (a running demo wrote its environment to {demo}/demo.env: `. {demo}/demo.env`)"
    raise fail(f"{what} needs a Prefect server and PREFECT_API_URL is not set: {hint}")
