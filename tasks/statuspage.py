"""Telling customers: incidents and maintenance on our status page (Statuspage manage API).

    POST  /pages/{page_id}/incidents        create_incident, schedule_maintenance (mutations)
    PATCH /pages/{page_id}/incidents/{id}   update_incident, resolve_incident     (mutations)
    GET   /pages/{page_id}/incidents/{id}   get_incident                          (read)
    GET   /pages/{page_id}/incidents        list_incidents                        (read)

Every write is sent once: a lost answer (timeout, dropped connection, 5xx) is `OutcomeUnknown` and
is never re-sent blind — reconcile with `get_incident` (an update) or `list_incidents(name=…)` (a
create, whose id was lost with the answer). 420 and 429 are the API's rate limit (one request per
second per key): the request was refused before anything happened, so it is sent again after
`Retry-After`; requests of one process are also paced to `min_interval_s` so that rarely happens.
`{"message": …}` answers become `PermanentError` / `NotAuthorized` carrying that message. The API
key never appears in a message, a result or a log line.

Components are named as in the block (`CustomerStatusPage.components`, name → id); a component id
is accepted too. Results are frozen models keyed by component id.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import quote

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.statuspage import CustomerStatusPage
from runbook import redact
from runbook.errors import (
    ConfigurationError,
    NotAuthorized,
    PermanentError,
    RateLimited,
)
from tasks.http import exchange, retry_after, unknown

SERVICE = "statuspage"
ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
RealtimeStatus = Literal["investigating", "identified", "monitoring", "resolved"]
MaintenanceStatus = Literal["scheduled", "in_progress", "verifying", "completed"]
Impact = Literal["none", "minor", "major", "critical"]
COMPONENT_STATUSES: frozenset[str] = frozenset(get_args(ComponentStatus))
INCIDENT_STATUSES: frozenset[str] = frozenset(
    get_args(RealtimeStatus) + get_args(MaintenanceStatus)
)
IMPACTS: frozenset[str] = frozenset(get_args(Impact))
NAME_LIMIT = 255  # the API refuses longer incident names
_STRUCTURED = frozenset({"body", "components", "component_ids"})  # parsed, not copied


class StatusIncident(BaseModel):
    """An incident (or scheduled maintenance) as the page reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: str
    impact: str | None = None
    body: str | None = None
    components: dict[str, str] = {}  # component id -> its status, as the page reports it
    component_ids: tuple[str, ...] = ()  # every component the incident affects
    created_at: str | None = None
    updated_at: str | None = None
    resolved_at: str | None = None
    scheduled_for: str | None = None
    scheduled_until: str | None = None
    shortlink: str | None = None

    @property
    def closed(self) -> bool:
        return self.status in ("resolved", "completed")


# -- pacing: one request per `min_interval_s` per key and base URL, in this process ---------------
_next_slot: dict[str, float] = {}
_slot_lock = threading.Lock()


def _pace_key(page: CustomerStatusPage) -> str:
    raw = f"{page.url.rstrip('/')}\0{page.api_key.get_secret_value()}".encode()
    return hashlib.sha256(raw).hexdigest()


@asynccontextmanager
async def _paced(page: CustomerStatusPage) -> AsyncIterator[None]:
    """Wait for this key's next slot; the following one starts `min_interval_s` after the answer
    (the server counts from when it received the request, which is before we hear back)."""
    interval = page.min_interval_s
    if interval <= 0:
        yield
        return
    key = _pace_key(page)
    with _slot_lock:
        now = time.monotonic()
        start = max(now, _next_slot.get(key, 0.0))
        _next_slot[key] = start + interval  # a concurrent caller queues behind this request
    if start > now:
        await asyncio.sleep(start - now)
    try:
        yield
    finally:
        with _slot_lock:
            _next_slot[key] = max(_next_slot.get(key, 0.0), time.monotonic() + interval)


# -- one exchange ---------------------------------------------------------------------------------
def _public(text: str, page: CustomerStatusPage) -> str:
    """`text` from the server, short, with the key (and every registered secret) masked."""
    key = page.api_key.get_secret_value()
    if key:
        text = text.replace(key, redact.MASK)
    return redact.mask(" ".join(text.split()))[:200]


def _message(response: httpx.Response, page: CustomerStatusPage) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for field in ("message", "error"):
            if isinstance(data.get(field), str) and data[field]:
                return _public(data[field], page)
    return _public(response.text, page) or response.reason_phrase


def _refuse(response: httpx.Response, page: CustomerStatusPage) -> None:
    """4xx answers, mapped; 5xx are left to `exchange` (transient, or unknown for a write)."""
    code = response.status_code
    if code in (420, 429):
        raise RateLimited(f"{SERVICE}: HTTP {code} rate limited", retry_after(response.headers))
    if code in (401, 403):
        raise NotAuthorized(
            f"{SERVICE}: HTTP {code}, credentials refused: {_message(response, page)}"
        )
    if 400 <= code < 500:
        raise PermanentError(f"{SERVICE}: HTTP {code}: {_message(response, page)}")


def _incidents_path(page: CustomerStatusPage, incident_id: str | None = None) -> str:
    if not page.api_key.get_secret_value():
        raise ConfigurationError(f"{SERVICE}: no API key configured")
    if not page.page_id:
        raise ConfigurationError(f"{SERVICE}: no page id configured")
    path = f"/pages/{quote(page.page_id, safe='')}/incidents"
    if incident_id is not None:
        if not incident_id:
            raise PermanentError(f"{SERVICE}: an incident id is required")
        path += f"/{quote(incident_id, safe='')}"
    return path


async def _call(
    page: CustomerStatusPage,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    mutation: bool,
) -> Any:
    """One request (re-sent only when refused by the rate limit or never sent); its JSON."""
    async with page.get_client() as client:

        async def call() -> httpx.Response:
            async with _paced(page):
                response = await client.request(method, path, json=body, params=params)
            _refuse(response, page)
            return response

        response = await exchange(SERVICE, call, mutation=mutation)
    try:
        return response.json()
    except ValueError:
        if mutation:  # a 2xx: it happened, but we cannot tell what it became
            raise unknown(SERVICE, "unreadable answer") from None
        raise PermanentError(f"{SERVICE}: answer is not JSON") from None


def _parse(data: Any, *, mutation: bool) -> StatusIncident:
    try:
        if not isinstance(data, dict) or not data.get("id"):
            raise ValueError("not an incident")
        raw = data.get("components")
        components: dict[str, str] = {}
        if isinstance(raw, dict):
            components = {str(k): str(v) for k, v in raw.items()}
        elif isinstance(raw, list):  # the real API answers component objects
            components = {
                str(c["id"]): str(c.get("status", ""))
                for c in raw
                if isinstance(c, dict) and c.get("id")
            }
        ids = [str(i) for i in data.get("component_ids") or []]
        ids += [i for i in components if i not in ids]
        body = data.get("body")
        updates = data.get("incident_updates")
        if body is None and isinstance(updates, list) and updates and isinstance(updates[0], dict):
            body = updates[0].get("body")
        text = {k: data.get(k) for k in StatusIncident.model_fields if k not in _STRUCTURED}
        return StatusIncident.model_validate(
            {
                **{k: (str(v) if v is not None else None) for k, v in text.items()},
                "body": str(body) if body is not None else None,
                "components": components,
                "component_ids": tuple(ids),
            }
        )
    except (ValueError, TypeError, KeyError):
        if mutation:
            raise unknown(SERVICE, "unreadable answer") from None
        raise PermanentError(f"{SERVICE}: answer is not an incident") from None


def _component_ids(page: CustomerStatusPage, names: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for name in names:
        found = page.component_id(name)
        if found is None:
            known = ", ".join(sorted(page.components)) or "none"
            raise ConfigurationError(f"{SERVICE}: unknown component {name!r} (configured: {known})")
        if found not in ids:
            ids.append(found)
    return ids


def _component_map(page: CustomerStatusPage, components: Mapping[str, str]) -> dict[str, str]:
    states: dict[str, str] = {}
    for name, status in components.items():
        if status not in COMPONENT_STATUSES:
            raise PermanentError(f"{SERVICE}: component {name!r}: invalid status {status!r}")
        states[_component_ids(page, [name])[0]] = status
    return states


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise PermanentError(f"{SERVICE}: invalid {what} {value!r}")


def _iso(moment: datetime, what: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PermanentError(f"{SERVICE}: {what} must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- tasks ----------------------------------------------------------------------------------------
@task(name="create-status-incident", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def create_incident(
    page: CustomerStatusPage,
    name: str,
    body: str,
    status: RealtimeStatus = "investigating",
    impact: Impact = "major",
    components: Mapping[str, ComponentStatus] | None = None,
    deliver_notifications: bool = True,
) -> StatusIncident:
    """Open a customer-facing incident; `components` maps component name → its status now."""
    _check(status, frozenset(get_args(RealtimeStatus)), "status")
    _check(impact, IMPACTS, "impact")
    states = _component_map(page, components or {})
    incident = {
        "name": name[:NAME_LIMIT],
        "status": status,
        "impact_override": impact,
        "body": body,
        "component_ids": list(states),
        "components": states,
        "deliver_notifications": deliver_notifications,
    }
    data = await _call(
        page, "POST", _incidents_path(page), body={"incident": incident}, mutation=True
    )
    return _parse(data, mutation=True)


@task(name="update-status-incident", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def update_incident(
    page: CustomerStatusPage,
    incident_id: str,
    status: RealtimeStatus | MaintenanceStatus,
    body: str,
    components: Mapping[str, ComponentStatus] | None = None,
    deliver_notifications: bool = True,
) -> StatusIncident:
    """Post an update (new status, message, optionally component statuses) to an incident.

    Components not named keep their status and stay affected (resolve restores them all)."""
    _check(status, INCIDENT_STATUSES, "status")
    incident: dict[str, Any] = {
        "status": status,
        "body": body,
        "deliver_notifications": deliver_notifications,
    }
    if components:  # only the map: `component_ids` would replace the incident's affected list
        incident["components"] = _component_map(page, components)
    data = await _call(
        page,
        "PATCH",
        _incidents_path(page, incident_id),
        body={"incident": incident},
        mutation=True,
    )
    return _parse(data, mutation=True)


@task(name="resolve-status-incident", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def resolve_incident(
    page: CustomerStatusPage,
    incident_id: str,
    body: str,
    components: Iterable[str] | None = None,
    deliver_notifications: bool = True,
) -> StatusIncident:
    """Resolve an incident and set every affected component back to `operational`.

    The components map is sent explicitly (the API does not restore components by itself). The
    affected components are `components` (names or ids) when given, else every component the
    incident lists — read first, so a component another incident holds down is not touched."""
    path = _incidents_path(page, incident_id)
    if components is None:
        current = _parse(await _call(page, "GET", path, mutation=False), mutation=False)
        ids = list(current.component_ids)
    else:
        ids = _component_ids(page, components)
    incident = {
        "status": "resolved",
        "body": body,
        "component_ids": ids,
        "components": dict.fromkeys(ids, "operational"),
        "deliver_notifications": deliver_notifications,
    }
    data = await _call(page, "PATCH", path, body={"incident": incident}, mutation=True)
    return _parse(data, mutation=True)


@task(name="schedule-status-maintenance", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def schedule_maintenance(
    page: CustomerStatusPage,
    name: str,
    body: str,
    scheduled_for: datetime,
    scheduled_until: datetime,
    components: Iterable[str] = (),
    remind_prior: bool = True,
    auto_in_progress: bool = True,
    auto_completed: bool = True,
    deliver_notifications: bool = True,
) -> StatusIncident:
    """Announce a maintenance window (the runbook's Sunday 02:00-04:00 UTC, 48 hours ahead).

    Components are only listed: the page marks them `under_maintenance` when the window starts
    and `operational` when it ends (auto transitions), not at the time of the notice."""
    start, end = _iso(scheduled_for, "scheduled_for"), _iso(scheduled_until, "scheduled_until")
    if scheduled_until <= scheduled_for:
        raise PermanentError(f"{SERVICE}: scheduled_until must be after scheduled_for")
    ids = _component_ids(page, components)
    incident = {
        "name": name[:NAME_LIMIT],
        "status": "scheduled",
        "body": body,
        "scheduled_for": start,
        "scheduled_until": end,
        "scheduled_remind_prior": remind_prior,
        "scheduled_auto_in_progress": auto_in_progress,
        "scheduled_auto_completed": auto_completed,
        "auto_transition_to_maintenance_state": bool(ids),
        "auto_transition_to_operational_state": bool(ids),
        "component_ids": ids,
        "deliver_notifications": deliver_notifications,
    }
    data = await _call(
        page, "POST", _incidents_path(page), body={"incident": incident}, mutation=True
    )
    return _parse(data, mutation=True)


@task(name="get-status-incident", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_incident(page: CustomerStatusPage, incident_id: str) -> StatusIncident:
    """One incident as customers see it now (reconciles an update whose answer was lost)."""
    data = await _call(page, "GET", _incidents_path(page, incident_id), mutation=False)
    return _parse(data, mutation=False)


@task(name="list-status-incidents", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def list_incidents(
    page: CustomerStatusPage, name: str | None = None, limit: int = 100
) -> tuple[StatusIncident, ...]:
    """Recent incidents, newest first; with `name`, only those named exactly so (reconciles a
    create whose answer — and so its id — was lost)."""
    params = {"limit": str(limit)} | ({"q": name} if name else {})
    data = await _call(page, "GET", _incidents_path(page), params=params, mutation=False)
    if not isinstance(data, list):
        raise PermanentError(f"{SERVICE}: answer is not a list of incidents")
    found = tuple(_parse(item, mutation=False) for item in data)
    wanted = name[:NAME_LIMIT] if name else None
    return tuple(i for i in found if wanted is None or i.name == wanted)
