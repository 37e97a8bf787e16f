"""Our own customer status page: the Statuspage manage API (`api.statuspage.io/v1`).

Not to be confused with `blocks.status_pages` (the vendors' public pages we only read). This one
is written to: incidents and scheduled maintenance that customers see. The API key is the secret;
the page id and the component ids are public.
"""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class CustomerStatusPage(RunbookBlock):
    """Base URL, OAuth API key, page id, and the page's components by name (name → id)."""

    _block_type_name = "Runbook Customer Status Page"
    _block_type_slug = "runbook-customer-status-page"

    url: str = Field("https://api.statuspage.io/v1", description="manage API base URL")
    api_key: SecretStr = Field(description="sent as `Authorization: OAuth <key>`")
    page_id: str = Field("", description="the page's id (Statuspage → API info)")
    components: dict[str, str] = Field(
        default_factory=dict, description='component name → id, e.g. {"API": "8kbf7d35c070"}'
    )
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait for an answer")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="seconds to open the connection (nothing sent yet)"
    )
    min_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="pause between two requests with this key (the API allows 1 request/s)",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            url=settings.statuspage_url,
            api_key=settings.statuspage_api_key or SecretStr(""),
            page_id=settings.statuspage_page_id,
            components=dict(settings.statuspage_components),
        )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"OAuth {self.api_key.get_secret_value()}"}

    def component_id(self, name_or_id: str) -> str | None:
        """The id of component `name_or_id` (a configured name, or already one of its ids)."""
        if name_or_id in self.components:
            return self.components[name_or_id]
        if name_or_id in self.components.values():
            return name_or_id
        return None

    def component_name(self, component_id: str) -> str:
        """The configured name of `component_id` (the id itself when it has none)."""
        for name, known in self.components.items():
            if known == component_id:
                return name
        return component_id

    def timeout(self) -> httpx.Timeout:
        """A connect timeout means nothing was sent; a read timeout after a write is unknown."""
        return httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))

    def get_client(self) -> httpx.AsyncClient:
        return http_client(
            base_url=self.url.rstrip("/"), headers=self.auth_headers(), timeout=self.timeout()
        )
