"""Slack incoming webhook (#support-agent-alerts)."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class Slack(RunbookBlock):
    """The incoming-webhook URL is the secret: whoever has it can post to the channel."""

    _block_type_name = "Runbook Slack"
    _block_type_slug = "runbook-slack"

    webhook_url: SecretStr
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(webhook_url=settings.slack_webhook_url or SecretStr(""))

    def get_client(self) -> httpx.AsyncClient:
        return http_client(timeout=self.timeout_s)
