"""The one table that performs acts: `ActionName` → executor (act, reconcile, undo).

A flow's `decide()` returns an `ActSpec` (runbook/plan.py); `IncidentRun.execute()` looks the
executor up here and runs it through the safety core. Every mutation is one Railway or RDS task
call; `reconcile` reads the platform to learn whether an act whose answer was lost happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from blocks.railway import Railway
from blocks.rds import Rds
from blocks.statuspage import CustomerStatusPage
from runbook.errors import ConfigurationError, PermanentError
from runbook.plan import MODEL_VARIABLE, POOL_VARIABLE, QUEUE_VARIABLE, ActionName
from tasks import railway, rds, statuspage

Params = dict[str, Any]


@dataclass(frozen=True)
class Platform:
    """The clients acts need (an RDS client only where the database is on RDS)."""

    railway: Railway
    rds: Rds | None = None
    status_page: CustomerStatusPage | None = None

    def need_rds(self) -> Rds:
        if self.rds is None:
            raise ConfigurationError("this act needs the RDS block")
        return self.rds

    def need_status_page(self) -> CustomerStatusPage:
        if self.status_page is None or not self.status_page.page_id:
            raise ConfigurationError("the customer status page is not configured")
        return self.status_page


@dataclass(frozen=True)
class Executor:
    act: Callable[[Platform, Params], Awaitable[dict[str, Any]]]
    reconcile: Callable[[Platform, Params], Awaitable[bool]] | None = None
    undo: Callable[[Platform, Params], Awaitable[dict[str, Any]]] | None = None


def _variable(name: str) -> Executor:
    """`railway vars set NAME=VALUE` (a redeploy follows, as the runbook's command does)."""

    async def set_it(p: Platform, params: Params) -> dict[str, Any]:
        return (await railway.set_variables(p.railway, {name: str(params[name])})).model_dump()

    async def is_set(p: Platform, params: Params) -> bool:
        return (await railway.get_variable(p.railway, name)).value == str(params[name])

    return Executor(act=set_it, reconcile=is_set, undo=set_it)


async def _scale(p: Platform, params: Params) -> dict[str, Any]:
    return (await railway.scale_replicas(p.railway, int(params["replicas"]))).model_dump()


async def _replicas_are(p: Platform, params: Params) -> bool:
    return (await railway.get_service_instance(p.railway)).num_replicas == int(params["replicas"])


async def _rollback(p: Platform, params: Params) -> dict[str, Any]:
    return (await railway.rollback_deployment(p.railway, params["deployment_id"])).model_dump()


async def _rolled_back(p: Platform, params: Params) -> bool:
    """Is the live deployment a rollback to `deployment_id` (same commit, not the bad one)?"""
    now = await railway.get_deployments(p.railway)
    by_id = {d.id: d for d in now.items}
    wanted, live = by_id.get(params["deployment_id"]), by_id.get(now.current_id or "")
    bad = params.get("from_deployment")
    return bool(wanted and live and live.commit == wanted.commit and live.id != bad)


async def _redeploy(p: Platform, params: Params) -> dict[str, Any]:
    live = await railway.get_service_instance(p.railway)
    if not live.latest_deployment_id:  # a precondition, recorded as a failed act
        raise PermanentError("railway: no live deployment to redeploy")
    return (await railway.redeploy_service(p.railway, live.latest_deployment_id)).model_dump()


async def _failover(p: Platform, params: Params) -> dict[str, Any]:
    return (await rds.failover_db(p.need_rds())).model_dump()


async def _deploy_commit(p: Platform, params: Params) -> dict[str, Any]:
    return (await railway.deploy_commit(p.railway, str(params["commit_sha"]))).model_dump()


async def _commit_deployed(p: Platform, params: Params) -> bool:
    now = await railway.get_deployments(p.railway)
    return any(d.commit == params["commit_sha"] for d in now.items)


async def _set_limits(p: Platform, params: Params) -> dict[str, Any]:
    change = await railway.set_service_limits(
        p.railway, float(params["vcpus"]), float(params["memory_gb"])
    )
    return change.model_dump()


async def _modify_class(p: Platform, params: Params) -> dict[str, Any]:
    change = await rds.modify_db_instance_class(
        p.need_rds(), str(params["instance_class"]), bool(params.get("apply_immediately", True))
    )
    return change.model_dump()


async def _class_modified(p: Platform, params: Params) -> bool:
    instance = await rds.get_db_instance(p.need_rds())
    wanted = params["instance_class"]
    return wanted in {instance.instance_class, instance.pending_instance_class}


async def _open_status(p: Platform, params: Params) -> dict[str, Any]:
    page = p.need_status_page()
    components: dict[str, Any] = dict.fromkeys(page.components, "major_outage")
    incident = await statuspage.create_incident(
        page, str(params["name"]), str(params["body"]), components=components
    )
    return {"status_incident": incident.id, "name": incident.name}


async def _status_opened(p: Platform, params: Params) -> bool:
    found = await statuspage.list_incidents(p.need_status_page(), name=params["name"])
    return any(i.status != "resolved" for i in found)


async def _update_status(p: Platform, params: Params) -> dict[str, Any]:
    incident = await statuspage.update_incident(
        p.need_status_page(), params["status_incident"], params["status"], params["body"]
    )
    return {"status_incident": incident.id, "status": incident.status}


async def _status_is(p: Platform, params: Params) -> bool:
    incident = await statuspage.get_incident(p.need_status_page(), params["status_incident"])
    return incident.status in {params["status"], "monitoring", "resolved"}


async def _resolve_status(p: Platform, params: Params) -> dict[str, Any]:
    incident = await statuspage.resolve_incident(
        p.need_status_page(), params["status_incident"], params["body"]
    )
    return {"status_incident": incident.id, "status": incident.status}


async def _status_resolved(p: Platform, params: Params) -> bool:
    incident = await statuspage.get_incident(p.need_status_page(), params["status_incident"])
    return incident.status == "resolved"


EXECUTORS: dict[ActionName, Executor] = {
    ActionName.SWITCH_MODEL: _variable(MODEL_VARIABLE),
    ActionName.RESTORE_MODEL: _variable(MODEL_VARIABLE),
    ActionName.ENABLE_REQUEST_QUEUE: _variable(QUEUE_VARIABLE),
    ActionName.DISABLE_REQUEST_QUEUE: _variable(QUEUE_VARIABLE),
    ActionName.SET_POOL_SIZE: _variable(POOL_VARIABLE),
    ActionName.SCALE_REPLICAS: Executor(act=_scale, reconcile=_replicas_are, undo=_scale),
    ActionName.ROLLBACK_DEPLOYMENT: Executor(act=_rollback, reconcile=_rolled_back),
    ActionName.REDEPLOY_SERVICE: Executor(act=_redeploy),
    ActionName.FAILOVER_DB: Executor(act=_failover),
    ActionName.DEPLOY_COMMIT: Executor(act=_deploy_commit, reconcile=_commit_deployed),
    ActionName.SET_SERVICE_LIMITS: Executor(act=_set_limits),
    ActionName.MODIFY_DB_INSTANCE_CLASS: Executor(act=_modify_class, reconcile=_class_modified),
    ActionName.OPEN_STATUS_INCIDENT: Executor(act=_open_status, reconcile=_status_opened),
    ActionName.UPDATE_STATUS_INCIDENT: Executor(act=_update_status, reconcile=_status_is),
    ActionName.RESOLVE_STATUS_INCIDENT: Executor(act=_resolve_status, reconcile=_status_resolved),
}


def executor(action: ActionName) -> Executor:
    try:
        return EXECUTORS[action]
    except KeyError:
        raise ConfigurationError(f"no executor performs {action.value}") from None


_DONE = {
    ActionName.SWITCH_MODEL: "DEFAULT_MODEL → {DEFAULT_MODEL}",
    ActionName.RESTORE_MODEL: "DEFAULT_MODEL restored to {DEFAULT_MODEL}",
    ActionName.ENABLE_REQUEST_QUEUE: "request queuing enabled",
    ActionName.DISABLE_REQUEST_QUEUE: "request queuing turned off again",
    ActionName.SET_POOL_SIZE: "DATABASE_POOL_SIZE → {DATABASE_POOL_SIZE}",
    ActionName.SCALE_REPLICAS: "replicas {from} → {replicas}",
    ActionName.ROLLBACK_DEPLOYMENT: "rolled back to {deployment_id}",
    ActionName.REDEPLOY_SERVICE: "API redeployed to reset its connections",
    ActionName.FAILOVER_DB: "RDS {instance} failed over to its standby",
    ActionName.DEPLOY_COMMIT: "deployed commit {commit_sha}",
    ActionName.SET_SERVICE_LIMITS: "limits set to {vcpus} vCPU, {memory_gb} GB per replica",
    ActionName.MODIFY_DB_INSTANCE_CLASS: "RDS instance class → {instance_class}",
    ActionName.OPEN_STATUS_INCIDENT: "customers told on the status page: {name}",
    ActionName.UPDATE_STATUS_INCIDENT: "status page updated: {status}",
    ActionName.RESOLVE_STATUS_INCIDENT: "status page incident resolved",
}


def done_text(action: ActionName, params: Params) -> str:
    """How the timeline and Slack say that the act happened (only once it did)."""
    try:
        return _DONE[action].format(**params)
    except (KeyError, IndexError):
        return f"{action.value} done"
