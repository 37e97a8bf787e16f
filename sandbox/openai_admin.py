"""OpenAI project API keys and the admin API that rotates them (runbook: "Rotate OpenAI key").

A project key cannot be created by API: rotation creates a service account (its key's value is
shown once), moves the app to it (Railway variable OPENAI_API_KEY), then deletes the old key.
The fake keeps the live key set; the chat fake and the simulated app accept only live keys, so
revoking the key the app still uses breaks the app — as it would in production.

Fault `openai-key-restricted`: service accounts created while it is active get a key without
model access (the chat API refuses it as an invalid key), so a rotation's verify fails.

    POST   /openai/v1/organization/projects/{project}/service_accounts   {"name"}
    DELETE /openai/v1/organization/projects/{project}/service_accounts/{id}
    GET    /openai/v1/organization/projects/{project}/api_keys
    DELETE /openai/v1/organization/projects/{project}/api_keys/{key_id}   (user keys only)
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.platform import Platform

PROJECT_ID = "proj_sbxSupport01"
RESTRICTED_FAULT = "openai-key-restricted"


@dataclass
class ApiKey:
    id: str
    value: str
    name: str
    owner_type: str  # "user" | "service_account"
    owner_id: str
    created_at: int
    usable: bool = True  # False: created under `openai-key-restricted` (no model access)

    def listed(self) -> dict[str, Any]:
        return {
            "object": "organization.project.api_key",
            "id": self.id,
            "name": self.name,
            "redacted_value": f"{self.value[:6]}...{self.value[-4:]}",
            "created_at": self.created_at,
            "owner": {"type": self.owner_type, self.owner_type: {"id": self.owner_id}},
        }


class OpenAiKeys:
    """The project's live keys (shared by the chat fake, the app simulation and the admin API)."""

    def __init__(self, initial_key: str) -> None:
        self.initial_key = initial_key
        self.keys: dict[str, ApiKey] = {}
        self.restrict_new = False
        self.restore()

    def restore(self) -> None:
        """Only the original user key is live (the sandbox's reset)."""
        key = ApiKey(
            "key_sbxUserPrimary",
            self.initial_key,
            "support-api",
            "user",
            "user_sbxOps",
            int(time.time()) - 90 * 86400,
        )
        self.keys = {key.id: key}
        self.restrict_new = False

    def on_event(self, event: str) -> None:
        if event == "reset":
            self.restore()
        elif event == f"inject:{RESTRICTED_FAULT}":
            self.restrict_new = True
        elif event in {f"clear:{RESTRICTED_FAULT}", f"cured:{RESTRICTED_FAULT}"}:
            self.restrict_new = False

    def valid(self, value: str) -> bool:
        return any(k.value == value and k.usable for k in self.keys.values())


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status_code=status,
    )


class OpenAiAdmin:
    def __init__(self, platform: Platform, keys: OpenAiKeys, admin_key: str) -> None:
        self.p = platform
        self.keys = keys
        self.admin_key = admin_key

    def _guard(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.admin_key}":
            return _error(401, "Invalid admin key.", "invalid_api_key")
        if request.path_params["project"] != PROJECT_ID:
            return _error(404, "Project not found.")
        return None

    async def create_service_account(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        try:
            name = json.loads(await request.body())["name"]
            if not isinstance(name, str) or not name:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, "name is required")
        account = f"svc_acct_{secrets.token_hex(8)}"
        key = ApiKey(
            f"key_{secrets.token_hex(8)}",
            f"sk-svcacct-{secrets.token_hex(24)}",
            "Secret Key",
            "service_account",
            account,
            int(time.time()),
            usable=not self.keys.restrict_new,
        )
        self.keys.keys[key.id] = key
        self.p.record(
            "openai", "createServiceAccount", {"name": name, "id": account, "key_id": key.id}
        )
        return JSONResponse(
            {
                "object": "organization.project.service_account",
                "id": account,
                "name": name,
                "role": "member",
                "created_at": key.created_at,
                "api_key": {
                    "object": "organization.project.service_account.api_key",
                    "value": key.value,
                    "name": key.name,
                    "created_at": key.created_at,
                    "id": key.id,
                },
            }
        )

    async def delete_service_account(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        account = request.path_params["account"]
        owned = [k for k in self.keys.keys.values() if k.owner_id == account]
        if not owned:
            return _error(404, "Service account not found.")
        for key in owned:
            del self.keys.keys[key.id]
        self.p.record("openai", "deleteServiceAccount", {"id": account})
        return JSONResponse(
            {
                "object": "organization.project.service_account.deleted",
                "id": account,
                "deleted": True,
            }
        )

    async def list_keys(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        data = [k.listed() for k in self.keys.keys.values()]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def delete_key(self, request: Request) -> JSONResponse:
        if denied := self._guard(request):
            return denied
        key = self.keys.keys.get(request.path_params["key_id"])
        if key is None:
            return _error(404, "API key not found.")
        if key.owner_type == "service_account":
            return _error(
                400, "Service account keys cannot be deleted; delete the service account instead."
            )
        del self.keys.keys[key.id]
        self.p.record("openai", "deleteApiKey", {"id": key.id})
        return JSONResponse(
            {"object": "organization.project.api_key.deleted", "id": key.id, "deleted": True}
        )
