"""Our own customer status page: the Statuspage manage API (`api.statuspage.io/v1`).

`POST /statuspage/v1/pages/{page_id}/incidents` (realtime incident, or a scheduled maintenance
with `status: "scheduled"`), `PATCH …/incidents/{id}`, `GET …/incidents[/{id}]`. Auth
`Authorization: OAuth <key>`; one request per second per key (429 + Retry-After), errors
`{"message": …}` as the real API answers. Every accepted write is recorded in the sink
`statuspage`, so tests can read what customers were told, and journaled as a mutation (a dry run
must not post to customers).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.platform import Platform, iso, now

REALTIME = {"investigating", "identified", "monitoring", "resolved"}
SCHEDULED = {"scheduled", "in_progress", "verifying", "completed"}
COMPONENT_STATES = {
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
}


class StatuspageManage:
    def __init__(self, platform: Platform, api_key: str, page_id: str) -> None:
        self.p = platform
        self.api_key = api_key
        self.page_id = page_id
        self.incidents: dict[str, dict[str, Any]] = {}
        self._last_ok = 0.0
        platform.sinks.setdefault("statuspage", [])

    def _guard(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"OAuth {self.api_key}":
            return JSONResponse({"message": "Could not authenticate"}, status_code=401)
        if request.path_params["page_id"] != self.page_id:
            return JSONResponse({"message": "Page not found"}, status_code=404)
        if now() - self._last_ok < 1.0:  # one request per second per key
            return JSONResponse(
                {"message": "Rate limit exceeded"}, status_code=429, headers={"Retry-After": "1"}
            )
        self._last_ok = now()
        return None

    async def _body(self, request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body())
            incident = body["incident"]
            if not isinstance(incident, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"message": "incident is missing"}, status_code=422)
        components = incident.get("components") or {}
        if not isinstance(components, dict) or any(
            v not in COMPONENT_STATES for v in components.values()
        ):
            return JSONResponse({"message": "components has an invalid status"}, status_code=422)
        status = incident.get("status")
        if status is not None and status not in REALTIME | SCHEDULED:
            return JSONResponse({"message": f"status {status!r} is invalid"}, status_code=422)
        return incident

    def _record(self, action: str, incident: dict[str, Any]) -> None:
        """Customers see it: a sink entry (what they were told) and a journaled mutation."""
        self.p.sinks["statuspage"].append({"ts": iso(now()), "action": action, **incident})
        self.p.record(
            "statuspage",
            f"{action}Incident",
            {"id": incident["id"], "status": incident.get("status")},
        )

    async def create(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        incident = await self._body(request)
        if isinstance(incident, JSONResponse):
            return incident
        if not incident.get("name"):
            return JSONResponse({"message": "name can't be blank"}, status_code=422)
        scheduled = incident.get("status") == "scheduled"
        if scheduled and not (incident.get("scheduled_for") and incident.get("scheduled_until")):
            return JSONResponse(
                {"message": "scheduled_for and scheduled_until are required"}, status_code=422
            )
        created = {
            "id": uuid.uuid4().hex[:12],
            "page_id": self.page_id,
            "created_at": iso(now()),
            "status": incident.get("status") or "investigating",
            "impact": incident.get("impact_override") or ("maintenance" if scheduled else "none"),
            **{k: v for k, v in incident.items() if k != "status"},
        }
        self.incidents[created["id"]] = created
        self._record("create", created)
        return JSONResponse(created, status_code=201)

    async def update(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        found = self.incidents.get(request.path_params["incident_id"])
        if found is None:
            return JSONResponse({"message": "Incident not found"}, status_code=404)
        incident = await self._body(request)
        if isinstance(incident, JSONResponse):
            return incident
        found.update(incident, updated_at=iso(now()))
        self._record("update", found)
        return JSONResponse(found)

    async def get(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        found = self.incidents.get(request.path_params["incident_id"])
        if found is None:
            return JSONResponse({"message": "Incident not found"}, status_code=404)
        return JSONResponse(found)

    async def list(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        return JSONResponse(
            sorted(self.incidents.values(), key=lambda i: i["created_at"], reverse=True)
        )
