"""The OpenAI admin API of the app's project: its API keys and service accounts.

Reads: `get_project_keys`. Acts: `create_service_account` (its key's value comes back once, as
a `SecretStr`), `delete_service_account` (retires the account and its key), `delete_api_key`
(a user's key; a service account's key answers 400 — delete the account instead).

A key's value never leaves this module except inside a `SecretStr`; errors name the status and
OpenAI's error code, never a body that could hold one.
"""

from __future__ import annotations

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from blocks.openai_admin import OpenAiAdmin
from runbook import redact
from runbook.errors import NotAuthorized, PermanentError
from tasks.http import exchange

SERVICE = "openai admin"


class ProjectKey(BaseModel):
    """One API key of the project, as the admin API lists it (never its value)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str = ""
    redacted_value: str = ""
    owner_type: str  # "user" | "service_account"
    owner_id: str = ""
    created_at: int = 0

    def matches(self, value: str) -> bool:
        """Is `value` the key this redacted form shows (`sk-abc...wxyz`)?"""
        head, sep, tail = self.redacted_value.partition("...")
        return bool(sep and head and tail) and value.startswith(head) and value.endswith(tail)


class NewServiceAccount(BaseModel):
    """A service account just created, with its key (the only time the value is shown)."""

    model_config = ConfigDict(frozen=True)

    id: str
    key_id: str
    api_key: SecretStr


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        raise PermanentError(f"{SERVICE}: HTTP {response.status_code}, not JSON") from None
    if not isinstance(body, dict):
        raise PermanentError(f"{SERVICE}: HTTP {response.status_code}, unexpected answer")
    return body


def _checked(response: httpx.Response) -> dict[str, object]:
    """The JSON body of a 2xx; an error as a secret-free `RunbookError` (status + code)."""
    if response.status_code < 400:
        return _json(response)
    code = ""
    try:
        error = response.json().get("error") or {}
        code = str(error.get("code") or error.get("type") or "") if isinstance(error, dict) else ""
    except (ValueError, AttributeError):
        pass
    why = f"{SERVICE}: HTTP {response.status_code}" + (f" ({code})" if code else "")
    if response.status_code in (401, 403):
        raise NotAuthorized(why)
    raise PermanentError(why)


def _owner(item: dict[str, object]) -> tuple[str, str]:
    owner = item.get("owner")
    if not isinstance(owner, dict):
        return "user", ""
    kind = str(owner.get("type") or "user")
    detail = owner.get(kind)
    return kind, str(detail.get("id") or "") if isinstance(detail, dict) else ""


@task(name="get-openai-project-keys", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_project_keys(admin: OpenAiAdmin) -> tuple[ProjectKey, ...]:
    """`GET .../api_keys`: the project's keys (ids, owners, redacted values)."""
    async with admin.get_client() as client:
        response = await exchange(SERVICE, lambda: client.get("api_keys"), check=False)
    data = _checked(response).get("data")
    keys = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        kind, owner_id = _owner(item)
        keys.append(
            ProjectKey(
                id=str(item["id"]),
                name=str(item.get("name") or ""),
                redacted_value=str(item.get("redacted_value") or ""),
                owner_type=kind,
                owner_id=owner_id,
                created_at=int(str(item.get("created_at") or 0)),
            )
        )
    return tuple(keys)


@task(name="create-openai-service-account", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def create_service_account(admin: OpenAiAdmin, name: str) -> NewServiceAccount:
    """`POST .../service_accounts {"name"}`: a new service account and its key (sent once: a
    lost answer is `OutcomeUnknown`, and the key it carried is gone with it)."""
    async with admin.get_client() as client:
        response = await exchange(
            SERVICE,
            lambda: client.post("service_accounts", json={"name": name}),
            check=False,
            mutation=True,
        )
    body = _checked(response)
    key = body.get("api_key")
    if not isinstance(key, dict) or not key.get("value") or not body.get("id"):
        raise PermanentError(f"{SERVICE}: the new service account came without a key")
    value = SecretStr(str(key["value"]))
    redact.register(value)  # from now on no log line can carry it
    return NewServiceAccount(id=str(body["id"]), key_id=str(key.get("id") or ""), api_key=value)


async def _delete(admin: OpenAiAdmin, path: str) -> bool:
    async with admin.get_client() as client:
        response = await exchange(SERVICE, lambda: client.delete(path), check=False, mutation=True)
    if response.status_code == 404:
        return False  # already gone
    return bool(_checked(response).get("deleted", True))


@task(name="delete-openai-service-account", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def delete_service_account(admin: OpenAiAdmin, account_id: str) -> bool:
    """`DELETE .../service_accounts/{id}`: retires the account and its key; False if it was
    already gone."""
    return await _delete(admin, f"service_accounts/{account_id}")


@task(name="delete-openai-api-key", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def delete_api_key(admin: OpenAiAdmin, key_id: str) -> bool:
    """`DELETE .../api_keys/{id}` (a user's key); False if it was already gone."""
    return await _delete(admin, f"api_keys/{key_id}")
