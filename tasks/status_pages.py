"""Public status pages (Statuspage v2 `summary.json`): OpenAI, Shopify, Gorgias.

The indicator can read `none` while an incident is still `monitoring`, so unresolved incidents
and non-operational components are reported as well.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.status_pages import StatusPages
from runbook.errors import ConfigurationError, PermanentError
from tasks.http import exchange


class ComponentStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: str


class StatusPageSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    page: str
    indicator: str  # none | minor | major | critical
    description: str
    degraded_components: tuple[ComponentStatus, ...]
    unresolved_incidents: tuple[str, ...]

    @property
    def operational(self) -> bool:
        return (
            self.indicator == "none"
            and not self.degraded_components
            and not self.unresolved_incidents
        )


@task(name="get-status-page", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_status_page(pages: StatusPages, name: str) -> StatusPageSummary:
    """One provider's status: overall indicator, degraded components, open incidents."""
    base = pages.pages.get(name)
    if not base:
        raise ConfigurationError(f"no status page configured for {name!r}")
    async with pages.get_client() as client:
        response = await exchange(
            f"status page {name}", lambda: client.get(f"{base.rstrip('/')}/api/v2/summary.json")
        )
    try:
        body = response.json()
        status = body["status"]
        components = tuple(
            ComponentStatus(name=str(c["name"]), status=str(c["status"]))
            for c in body.get("components") or []
            if c.get("status") != "operational"
        )
        incidents = tuple(
            f"{i['name']} ({i.get('status', 'unknown')})"
            for i in body.get("incidents") or []
            if i.get("status") not in {"resolved", "postmortem", "completed"}
        )
        return StatusPageSummary(
            page=name,
            indicator=str(status.get("indicator", "none")),
            description=str(status.get("description", "")),
            degraded_components=components,
            unresolved_incidents=incidents,
        )
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"status page {name}: not a Statuspage v2 summary") from None
