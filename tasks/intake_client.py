"""Raise an alert through our own intake, exactly as an external source would.

`POST {RUNBOOK_INTAKE_URL}/alerts/generic` signed with `RUNBOOK_GENERIC_SECRET`
(`X-Signature: sha256=HMAC(secret, "<ts>." + body)`, `X-Timestamp`): so a finding of ours
(a critical health check, a key-metrics breach) is authenticated, deduplicated, routed,
suppressed in maintenance and dispatched like any alert, instead of a side channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from runbook.errors import ConfigurationError
from runbook.settings import get_settings
from runbook.tls import http_client
from tasks.http import exchange

SERVICE = "intake"


class Raised(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: int
    incidents: list[str] = []


def sign(secret: str, body: bytes, ts: int) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": str(ts), "X-Signature": f"sha256={digest}"}


@task(name="raise-alert", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def raise_alert(alert: dict[str, Any]) -> Raised:
    """Post one generic-format alert to the intake (retried once when transient)."""
    settings = get_settings()
    if not settings.intake_url or settings.generic_secret is None:
        raise ConfigurationError(
            "intake: RUNBOOK_INTAKE_URL and RUNBOOK_GENERIC_SECRET are needed to raise alerts"
        )
    body = json.dumps(alert, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        **sign(settings.generic_secret.get_secret_value(), body, int(time.time())),
    }
    url = settings.intake_url.rstrip("/") + "/alerts/generic"
    async with http_client(timeout=10.0) as client:
        response = await exchange(SERVICE, lambda: client.post(url, content=body, headers=headers))
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    items = answer.get("alerts") if isinstance(answer, dict) else None
    incidents = [
        str(i["incident"]) for i in items or [] if isinstance(i, dict) and i.get("incident")
    ]
    return Raised(status=response.status_code, incidents=incidents)
