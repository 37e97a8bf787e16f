"""Public status pages (Atlassian Statuspage v2 JSON; no auth): OpenAI, Shopify, Gorgias."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class StatusPages(RunbookBlock):
    """A name → base URL map; `/api/v2/summary.json` is read below each base URL."""

    _block_type_name = "Runbook Status Pages"
    _block_type_slug = "runbook-status-pages"

    pages: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(pages=dict(settings.status_pages))

    def get_client(self) -> httpx.AsyncClient:
        return http_client(timeout=self.timeout_s)
