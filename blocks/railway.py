"""Railway, the deploy platform: GraphQL at backboard.railway.com/graphql/v2."""

from __future__ import annotations

from typing import Literal, Self

import httpx
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class Railway(RunbookBlock):
    """Token and ids of the Railway project/environment/service that runs the API."""

    _block_type_name = "Runbook Railway"
    _block_type_slug = "runbook-railway"

    endpoint: str = "https://backboard.railway.com/graphql/v2"
    token: SecretStr = Field(description="account/workspace token, or a project token")
    token_kind: Literal["account", "project"] = "account"
    project_id: str = ""
    environment_id: str = ""
    service_id: str = ""
    postgres_service_id: str = Field(
        "", description="a Railway-hosted Postgres service (empty: the database lives elsewhere)"
    )
    timeout_s: float = Field(15.0, gt=0, description="seconds to wait for an answer (read/write)")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="seconds to open the connection (nothing sent yet)"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            endpoint=settings.railway_endpoint,
            token=settings.railway_token or SecretStr(""),
            token_kind="project" if settings.railway_token_kind == "project" else "account",
            project_id=settings.railway_project_id,
            environment_id=settings.railway_environment_id,
            service_id=settings.railway_service_id,
            postgres_service_id=settings.railway_postgres_service_id,
            timeout_s=settings.railway_timeout_s,
        )

    def auth_headers(self) -> dict[str, str]:
        secret = self.token.get_secret_value()
        if self.token_kind == "project":
            return {"Project-Access-Token": secret}
        return {"Authorization": f"Bearer {secret}"}

    def timeout(self) -> httpx.Timeout:
        """Explicit phases: a connect timeout means nothing was sent (safe to retry even a
        mutation); a read/write timeout after the request left is an unknown outcome."""
        return httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))

    def get_client(self) -> httpx.AsyncClient:
        return http_client(headers=self.auth_headers(), timeout=self.timeout())
