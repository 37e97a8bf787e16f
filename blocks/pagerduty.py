"""PagerDuty Events v2 (the routing key travels in the body; no auth header)."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings
from runbook.tls import http_client


class PagerDuty(RunbookBlock):
    """Events API URL and the service's integration (routing) key."""

    _block_type_name = "Runbook PagerDuty"
    _block_type_slug = "runbook-pagerduty"

    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretStr
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            events_url=settings.pagerduty_events_url,
            routing_key=settings.pagerduty_routing_key or SecretStr(""),
        )

    def get_client(self) -> httpx.AsyncClient:
        return http_client(timeout=self.timeout_s)
