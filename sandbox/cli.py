"""`runbook sandbox up|down|status|inject FAULT|clear` (placeholder until the sandbox lands)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The simulated support platform for demos, tests and game days.", no_args_is_help=True
)
