"""AWS RDS, where the platform's Postgres may live (boto3; moto's server in the sandbox).

Clients always carry explicit timeouts. A mutation's client (`get_client(mutation=True)`) makes
exactly one attempt (`total_max_attempts=1`: botocore's own `max_attempts` counts *retries*,
so 1 there would still send twice): a reboot/modify whose answer was lost must not be re-sent
blind. Reads keep a few standard-mode retries (botocore's is their only retry layer).
"""

from __future__ import annotations

from typing import Any, Self

import boto3
from botocore.config import Config
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings


class Rds(RunbookBlock):
    """Region, instance id and (optionally) explicit credentials and an endpoint override."""

    _block_type_name = "Runbook RDS"
    _block_type_slug = "runbook-rds"

    region: str = "us-east-1"
    instance_id: str = "support-agent-db"
    endpoint_url: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds to open the connection")
    read_timeout_s: float = Field(30.0, gt=0, description="seconds to wait for an answer")
    read_attempts: int = Field(3, ge=1, le=5, description="attempts for a read (not mutations)")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            region=settings.aws_region,
            instance_id=settings.rds_instance_id,
            endpoint_url=settings.aws_endpoint_url,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
        )

    def client_config(self, *, mutation: bool = False) -> Config:
        attempts = 1 if mutation else self.read_attempts
        return Config(
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            retries={"total_max_attempts": attempts, "mode": "standard"},
        )

    def get_client(self, *, mutation: bool = False) -> Any:
        """A boto3 RDS client (sync: call it through `asyncio.to_thread`); `mutation=True` for
        one that never retries."""
        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": self.client_config(mutation=mutation),
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.aws_access_key_id and self.aws_secret_access_key:
            kwargs["aws_access_key_id"] = self.aws_access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
        return boto3.client("rds", **kwargs)
