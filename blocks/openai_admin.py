"""The OpenAI admin API of the app's project (runbook: "Rotate OpenAI key").

An admin key (never the app's own key): it creates and retires the project's service accounts
and lists or deletes its API keys. A project API key cannot be created by API; a service
account's key can, and its value is shown once (APIS.md "OpenAI admin API").
"""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class OpenAiAdmin(RunbookBlock):
    """Admin API base URL, admin key and the project whose keys the app uses."""

    _block_type_name = "Runbook OpenAI Admin"
    _block_type_slug = "runbook-openai-admin"

    base_url: str = "https://api.openai.com/v1"
    admin_key: SecretStr | None = None
    project_id: str = Field("", description="proj_…: the project of the app's key")
    timeout_s: float = Field(20.0, gt=0, le=300)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            base_url=settings.openai_admin_url,
            admin_key=settings.openai_admin_key,
            project_id=settings.openai_project_id,
        )

    @property
    def configured(self) -> bool:
        return bool(self.admin_key and self.admin_key.get_secret_value() and self.project_id)

    def get_client(self) -> httpx.AsyncClient:
        key = self.admin_key.get_secret_value() if self.admin_key else ""
        return http_client(
            base_url=f"{self.base_url.rstrip('/')}/organization/projects/{self.project_id}/",
            headers={"Authorization": f"Bearer {key}"},
            timeout=self.timeout_s,
        )
