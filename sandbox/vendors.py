"""Third-party fakes: Statuspage v2 pages, an OpenAI-compatible endpoint, Slack and PagerDuty
sinks. Their answers follow the platform's faults; the sinks record every accepted message.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from sandbox.openai_admin import OpenAiKeys
from sandbox.platform import Platform, iso, now

COMPONENTS = {
    "openai": ["API", "ChatGPT", "Playground", "Sora"],
    "shopify": ["Admin", "Checkout", "Storefront", "API & Mobile"],
    "gorgias": ["Helpdesk", "API", "Integrations", "Chat widget"],
}
PAGE_NAMES = {"openai": "OpenAI", "shopify": "Shopify", "gorgias": "Gorgias"}


class StatusPages:
    """`/status/{name}/api/v2/{status,summary,components}.json`, `incidents/unresolved.json`."""

    def __init__(self, platform: Platform) -> None:
        self.p = platform

    def _outage(self, name: str) -> tuple[str, str] | None:
        """(component, incident name) when the page should show an outage."""
        fault = self.p.active("llm-outage")
        if name == "openai" and fault:
            return "API", "Elevated error rates for API requests"
        fault = self.p.active("integration-outage")
        if fault and fault.target == name:
            api = "API & Mobile" if name == "shopify" else "API"
            return api, f"{PAGE_NAMES[name]} API unavailable"
        return None

    def summary(self, name: str) -> dict[str, Any]:
        outage = self._outage(name)
        started = iso(now() - 300)
        components = [
            {
                "id": f"{name}-{i}",
                "name": c,
                "updated_at": started,
                "status": "major_outage" if outage and c == outage[0] else "operational",
            }
            for i, c in enumerate(COMPONENTS[name])
        ]
        incidents = []
        if outage:
            fault = self.p.active("llm-outage") or self.p.active("integration-outage")
            created = iso(fault.injected_at) if fault else started
            incidents.append(
                {
                    "id": f"inc-{name}-1",
                    "name": outage[1],
                    "status": "investigating",
                    "impact": "major",
                    "created_at": created,
                    "updated_at": created,
                    "shortlink": f"https://stspg.io/{name}",
                    "components": [c for c in components if c["status"] != "operational"],
                    "incident_updates": [
                        {
                            "status": "investigating",
                            "created_at": created,
                            "body": "We are investigating the issue.",
                        }
                    ],
                }
            )
        indicator = "major" if outage else "none"
        description = "Major System Outage" if outage else "All Systems Operational"
        return {
            "page": {
                "id": f"page-{name}",
                "name": PAGE_NAMES[name],
                "url": f"https://status.{name}.example",
                "updated_at": iso(now()),
            },
            "status": {"indicator": indicator, "description": description},
            "components": components,
            "incidents": incidents,
            "scheduled_maintenances": [],
        }

    async def handle(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        what = request.path_params["what"]
        if name not in COMPONENTS:
            return JSONResponse({"error": "page not found"}, status_code=404)
        s = self.summary(name)
        views = {
            "summary.json": s,
            "status.json": {"page": s["page"], "status": s["status"]},
            "components.json": {"page": s["page"], "components": s["components"]},
            "incidents/unresolved.json": {"page": s["page"], "incidents": s["incidents"]},
            "incidents.json": {"page": s["page"], "incidents": s["incidents"]},
        }
        if what not in views:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(views[what])


def _openai_error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status_code=status,
        headers=headers,
    )


class OpenAi:
    """`POST /openai/v1/chat/completions` and `GET /openai/v1/models` with real error shapes."""

    def __init__(self, platform: Platform, keys: OpenAiKeys) -> None:
        self.p = platform
        self.keys = keys

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self.keys.valid(key)

    async def models(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._unauthorized()
        ids = [self.p.primary_model, self.p.fallback_model]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
                    for m in ids
                ],
            }
        )

    def _unauthorized(self) -> JSONResponse:
        return _openai_error(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )

    async def completions(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.body())
            model = body["model"]
            messages = body["messages"]
            if not isinstance(model, str) or not isinstance(messages, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _openai_error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        if model not in {self.p.primary_model, self.p.fallback_model}:
            return _openai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        failure = self.p.llm_failure(model)
        if failure == "rate_limit":
            return _openai_error(
                429,
                f"Rate limit reached for {model} on requests per min (RPM): Limit 500,"
                " Used 500, Requested 1. Please try again in 2s.",
                "requests",
                "rate_limit_exceeded",
                headers={
                    "retry-after": "2",
                    "retry-after-ms": "2000",
                    "x-ratelimit-limit-requests": "500",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-remaining-tokens": "0",
                    "x-ratelimit-reset-requests": "2s",
                },
            )
        if failure == "outage":
            return _openai_error(
                503, "The server is overloaded or not ready yet.", "server_error", None
            )
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "pong"},
                    }
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
            },
            headers={
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "499",
                "x-ratelimit-reset-requests": "120ms",
            },
        )


class Sinks:
    """Slack incoming webhook and PagerDuty Events v2: validate like the real ones, record."""

    def __init__(self, platform: Platform, slack_path: str, routing_key: str) -> None:
        self.p = platform
        self.slack_path = slack_path
        self.routing_key = routing_key

    async def slack(self, request: Request) -> Response:
        if request.url.path != self.slack_path:
            return PlainTextResponse("no_service", status_code=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return PlainTextResponse("no_text", status_code=400)
        self.p.sinks["slack"].append(
            {"ts": iso(now()), "text": body.get("text"), "blocks": body.get("blocks")}
        )
        return PlainTextResponse("ok")

    async def pagerduty(self, request: Request) -> JSONResponse:
        def invalid(*errors: str) -> JSONResponse:
            return JSONResponse(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": list(errors),
                },
                status_code=400,
            )

        try:
            event = json.loads(await request.body())
        except ValueError:
            return invalid("Request body is not valid JSON")
        if not isinstance(event, dict):
            return invalid("Event must be an object")
        if event.get("routing_key") != self.routing_key:
            return invalid("Invalid routing key")
        action = event.get("event_action")
        if action not in {"trigger", "acknowledge", "resolve"}:
            return invalid("'event_action' is missing or invalid")
        payload = event.get("payload") or {}
        dedup = event.get("dedup_key")
        if action == "trigger":
            missing = [f for f in ("summary", "source", "severity") if not payload.get(f)]
            if missing:
                return invalid(*(f"'payload.{f}' is missing or blank" for f in missing))
            if payload["severity"] not in {"critical", "error", "warning", "info"}:
                return invalid("'payload.severity' is invalid")
            dedup = dedup or uuid.uuid4().hex
        elif not dedup:
            return invalid("'dedup_key' is required for acknowledge and resolve")
        self.p.sinks["pagerduty"].append(
            {
                "ts": iso(now()),
                "event_action": action,
                "dedup_key": dedup,
                "payload": payload,
            }
        )
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": dedup}, status_code=202
        )
