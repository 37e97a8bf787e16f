"""LangSmith traces (runs query API, `x-api-key`)."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class LangSmith(RunbookBlock):
    """API key, base URL and the project (session) whose traces the flows read."""

    _block_type_name = "Runbook LangSmith"
    _block_type_slug = "runbook-langsmith"

    base_url: str = "https://api.smith.langchain.com"
    api_key: SecretStr
    project: str = "ecommerce-support-prod"
    timeout_s: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            base_url=settings.langsmith_url,
            api_key=settings.langsmith_api_key or SecretStr(""),
            project=settings.langsmith_project,
        )

    def get_client(self) -> httpx.AsyncClient:
        return http_client(
            base_url=self.base_url,
            headers={"x-api-key": self.api_key.get_secret_value()},
            timeout=self.timeout_s,
        )
