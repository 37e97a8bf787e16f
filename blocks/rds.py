"""AWS RDS, where the platform's Postgres may live (boto3; moto's server in the sandbox)."""

from __future__ import annotations

from typing import Any, Self

import boto3
from pydantic import SecretStr

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

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            region=settings.aws_region,
            instance_id=settings.rds_instance_id,
            endpoint_url=settings.aws_endpoint_url,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
        )

    def get_client(self) -> Any:
        """A boto3 RDS client (sync: call it through `asyncio.to_thread`)."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.aws_access_key_id and self.aws_secret_access_key:
            kwargs["aws_access_key_id"] = self.aws_access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
        return boto3.client("rds", **kwargs)
