"""The platform's Redis (the runbook's `$REDIS_URL`), not our own coordination Redis."""

from __future__ import annotations

from typing import Self

import redis.asyncio as aioredis
from pydantic import Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings


class AppRedis(RunbookBlock):
    """Connection to the support platform's Redis."""

    _block_type_name = "Runbook App Redis"
    _block_type_slug = "runbook-app-redis"

    url: SecretStr = Field(description="redis://[:password@]host:6379/0")
    timeout_s: float = Field(3.0, gt=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(url=settings.app_redis_url)

    def get_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url.get_secret_value(),
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
        )
