"""The support API under watch (the runbook's `https://api.example.com`)."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class SupportApi(RunbookBlock):
    """Base URL and health paths of the customer-support API."""

    _block_type_name = "Runbook Support API"
    _block_type_slug = "runbook-support-api"

    base_url: str = Field(description="e.g. https://api.example.com")
    health_path: str = "/health"
    ready_path: str = "/health/ready"
    timeout_s: float = Field(5.0, gt=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            base_url=settings.api_url,
            health_path=settings.api_health_path,
            ready_path=settings.api_ready_path,
            timeout_s=settings.api_timeout_s,
        )

    def get_client(self) -> httpx.AsyncClient:
        return http_client(base_url=self.base_url, timeout=self.timeout_s)
