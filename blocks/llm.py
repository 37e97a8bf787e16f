"""An OpenAI-compatible endpoint, probed with a minimal request for the primary and fallback."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class LlmProbe(RunbookBlock):
    """Base URL, key and the two models the runbook names (`DEFAULT_MODEL` and its fallback)."""

    _block_type_name = "Runbook LLM Probe"
    _block_type_slug = "runbook-llm-probe"

    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr
    primary_model: str = "gpt-4o"
    fallback_model: str = "gpt-4o-mini"
    timeout_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key or SecretStr(""),
            primary_model=settings.llm_primary_model,
            fallback_model=settings.llm_fallback_model,
        )

    def get_client(self) -> httpx.AsyncClient:
        return http_client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key.get_secret_value()}"},
            timeout=self.timeout_s,
        )
