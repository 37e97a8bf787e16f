"""`runbook blocks register|configure`: block types and documents on the Prefect server."""

from __future__ import annotations

import asyncio

import typer
from prefect.settings import PREFECT_API_URL
from rich.console import Console

app = typer.Typer(
    help="Register block types; save block documents from RUNBOOK_* variables.",
    no_args_is_help=True,
)
console = Console()


def _require_api() -> None:
    if not PREFECT_API_URL.value():
        from runbook.cli.output import fail

        raise fail(
            "PREFECT_API_URL is not set: start a Prefect server (`prefect server start`) "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )


@app.command()
def register() -> None:
    """Register every runbook block type (and its schema) with the Prefect server."""
    _require_api()
    from blocks import ALL_BLOCKS

    async def run() -> None:
        for block in ALL_BLOCKS:
            await block.aregister_type_and_schema()

    asyncio.run(run())
    for block in ALL_BLOCKS:
        console.print(f"registered [bold]{block.get_block_type_slug()}[/]")


@app.command()
def configure(
    from_env: bool = typer.Option(
        False, "--from-env", help="build every block from RUNBOOK_* environment variables"
    ),
    name: str | None = typer.Option(
        None, help="block document name (default: RUNBOOK_ENVIRONMENT, else 'default')"
    ),
) -> None:
    """Save one block document per system, named after the environment."""
    _require_api()
    if not from_env:
        from runbook.cli.output import fail

        raise fail("nothing to configure from: pass --from-env (or edit blocks in the Prefect UI)")
    from blocks import ALL_BLOCKS
    from runbook.settings import get_settings

    settings = get_settings()
    document = name or settings.environment

    async def run() -> None:
        for block in ALL_BLOCKS:
            await block.aregister_type_and_schema()
            await block.from_settings(settings).asave(document, overwrite=True)

    asyncio.run(run())
    for block in ALL_BLOCKS:
        console.print(f"saved [bold]{block.get_block_type_slug()}/{document}[/]")
