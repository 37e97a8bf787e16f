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
