"""`IntakeRoutes`: a Prefect Block that overrides the bundled routing table in production.

Register the type and save a document once (`IntakeRoutes(table=open("routes.yaml").read())
.save("production")`), then start intake with `RUNBOOK_INTAKE_ROUTES_BLOCK=production`.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client

from intake.routes import RoutingTable, parse_table

log = logging.getLogger("intake")


class IntakeRoutes(Block):
    """The alert routing table (YAML, same format as `intake/routes.yaml`)."""

    _block_type_name = "Runbook Intake Routes"
    _block_type_slug = "runbook-intake-routes"

    table: str


async def load_block_table(name: str, fallback: RoutingTable) -> RoutingTable:
    """The table in block document `name`; the file's table if the block cannot be read.

    An unreadable block (Prefect API down at start-up, no such document) keeps the file's table
    so alerts are still routed; an invalid table in the block is a configuration error.
    """
    try:
        # the document itself, not `IntakeRoutes.aload`: loading a Block emits a Prefect event,
        # and a refused start-up would then end with the events worker's warnings
        async with get_client() as client:
            document = await client.read_block_document_by_name(
                name, block_type_slug=IntakeRoutes.get_block_type_slug(), include_secrets=False
            )
        text: Any = document.data["table"]
    except Exception as exc:
        log.warning("routing block %r not loaded (%s); using the file", name, type(exc).__name__)
        return fallback
    return parse_table(str(text), origin=f"IntakeRoutes block {name!r}")
