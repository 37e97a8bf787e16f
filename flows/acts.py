"""The one table that performs acts: `ActionName` → executor (act, reconcile, undo).

A flow's `decide()` returns an `ActSpec` (runbook/plan.py); `IncidentRun.execute()` looks the
executor up here and runs it through the safety core. Every mutation is one Railway or RDS task
call (a security act: one app-database statement, or one OpenAI admin call plus the variable it
fills; a migration: one Alembic command on the environment's app database); `reconcile`
reads the platform to learn whether an act whose answer was lost happened.
No executor returns a secret: the ledger records what they return.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blocks.app_database import AppDatabase
from blocks.openai_admin import OpenAiAdmin
from blocks.railway import Railway
from blocks.rds import Rds
from blocks.statuspage import CustomerStatusPage
from runbook.errors import ConfigurationError, OutcomeUnknown, PermanentError, RunbookError
from runbook.plan import (
    MAINTENANCE_VARIABLE,
    MODEL_VARIABLE,
    POOL_VARIABLE,
    QUEUE_VARIABLE,
    ActionName,
)
from tasks import app_keys, migrations, openai_admin, postgres, railway, rds, statuspage

Params = dict[str, Any]


@dataclass(frozen=True)
class Platform:
    """The clients acts need (an RDS client only where the database is on RDS)."""

    railway: Railway
    rds: Rds | None = None
    status_page: CustomerStatusPage | None = None
    app_db: AppDatabase | None = None  # store keys (Security Procedures)
    openai_admin: OpenAiAdmin | None = None  # the OpenAI project's keys

    def need_app_db(self) -> AppDatabase:
        if self.app_db is None:
            raise ConfigurationError("this act needs the app database block")
        return self.app_db

    def need_openai_admin(self) -> OpenAiAdmin:
        if self.openai_admin is None or not self.openai_admin.configured:
            raise ConfigurationError(
                "the OpenAI admin API is not configured (RUNBOOK_OPENAI_ADMIN_KEY,"
                " RUNBOOK_OPENAI_PROJECT_ID)"
            )
        return self.openai_admin

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
    state = str(params.get("component_status", "major_outage"))  # or under_maintenance
    components: dict[str, Any] = dict.fromkeys(page.components, state)
    incident = await statuspage.create_incident(
        page,
        str(params["name"]),
        str(params["body"]),
        status=params.get("status", "investigating"),
        impact=params.get("impact", "major"),
        components=components,
    )
    return {"status_incident": incident.id, "name": incident.name}


async def _status_opened(p: Platform, params: Params) -> bool:
    found = await statuspage.list_incidents(p.need_status_page(), name=params["name"])
    return any(i.status != "resolved" for i in found)


async def _update_status(p: Platform, params: Params) -> dict[str, Any]:
    page = p.need_status_page()
    state = params.get("component_status")  # e.g. under_maintenance while a window runs
    components: dict[str, Any] | None = dict.fromkeys(page.components, state) if state else None
    incident = await statuspage.update_incident(
        page, params["status_incident"], params["status"], params["body"], components=components
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


# -- Security Procedures ------------------------------------------------------------------------
async def _issue_store_key(p: Platform, params: Params) -> dict[str, Any]:
    key = await app_keys.insert_store_key(
        p.need_app_db(), params["store_id"], params["key_prefix"], params["key_sha256"]
    )
    return {"key_id": key.id, "store_id": key.store_id, "key_prefix": key.key_prefix}


async def _store_key_issued(p: Platform, params: Params) -> bool:
    return await app_keys.get_key_by_hash(p.need_app_db(), params["key_sha256"]) is not None


async def _revoke_issued_key(p: Platform, params: Params) -> dict[str, Any]:
    """Undo of an issue: the new key is revoked (nobody must hold a key we do not stand by)."""
    db = p.need_app_db()
    key = await app_keys.get_key_by_hash(db, params["key_sha256"])
    revoked = await app_keys.revoke_store_keys(db, key.store_id, [key.id]) if key else []
    return {"revoked": revoked}


async def _revoke_store_keys(p: Platform, params: Params) -> dict[str, Any]:
    ids = [int(i) for i in params["key_ids"]]
    revoked = await app_keys.revoke_store_keys(p.need_app_db(), params["store_id"], ids)
    return {"store_id": params["store_id"], "revoked": revoked}


async def _store_keys_revoked(p: Platform, params: Params) -> bool:
    wanted = {int(i) for i in params["key_ids"]}
    keys = await app_keys.get_store_keys(p.need_app_db(), [params["store_id"]])
    return all(k.revoked_at is not None for k in keys if k.id in wanted)


async def _disable_keys(p: Platform, params: Params) -> dict[str, Any]:
    ids = [int(i) for i in params["key_ids"]]
    return {"disabled": await app_keys.disable_store_keys(p.need_app_db(), ids)}


async def _keys_disabled(p: Platform, params: Params) -> bool:
    wanted = {int(i) for i in params["key_ids"]}
    keys = await app_keys.get_store_keys(p.need_app_db(), list(params["stores"]))
    return all(not k.live for k in keys if k.id in wanted)


async def _issue_openai_key(p: Platform, params: Params) -> dict[str, Any]:
    """A new service account, and its key (shown this once) straight into the platform variable
    with skipDeploys: the value never leaves these two calls."""
    admin = p.need_openai_admin()
    account = await openai_admin.create_service_account(admin, params["service_account_name"])
    try:
        await railway.set_secret_variable(
            p.railway, params["variable"], account.api_key, skip_deploys=True
        )
    except OutcomeUnknown:
        raise  # it may be set: the safety core reads the platform, a human looks
    except RunbookError as exc:  # stored nowhere: retire the account, no orphan key stays live
        with contextlib.suppress(RunbookError):
            await openai_admin.delete_service_account(admin, account.id)
        raise PermanentError(f"{exc}; the new service account was retired again") from None
    return {
        "service_account_id": account.id,
        "key_id": account.key_id,
        "variable": params["variable"],
        "skip_deploys": True,
    }


async def _revoke_openai_key(p: Platform, params: Params) -> dict[str, Any]:
    admin = p.need_openai_admin()
    if params.get("owner") == "service_account" and params.get("service_account_id"):
        live = await openai_admin.delete_service_account(admin, params["service_account_id"])
    else:
        live = await openai_admin.delete_api_key(admin, params["key_id"])
    return {"revoked": params["key_id"], "was_live": live}


async def _openai_key_revoked(p: Platform, params: Params) -> bool:
    keys = await openai_admin.get_project_keys(p.need_openai_admin())
    return all(k.id != params["key_id"] for k in keys)


# -- Maintenance Windows ------------------------------------------------------------------------
async def _schedule_status(p: Platform, params: Params) -> dict[str, Any]:
    page = p.need_status_page()
    window = await statuspage.schedule_maintenance(
        page,
        str(params["name"]),
        str(params["body"]),
        datetime.fromisoformat(str(params["scheduled_for"])),
        datetime.fromisoformat(str(params["scheduled_until"])),
        components=list(page.components),
    )
    return {"status_incident": window.id, "name": window.name}


async def _complete_status(p: Platform, params: Params) -> dict[str, Any]:
    page = p.need_status_page()
    components: dict[str, Any] = dict.fromkeys(page.components, "operational")
    incident = await statuspage.update_incident(
        page, params["status_incident"], "completed", params["body"], components=components
    )
    return {"status_incident": incident.id, "status": incident.status}


async def _status_completed(p: Platform, params: Params) -> bool:
    incident = await statuspage.get_incident(p.need_status_page(), params["status_incident"])
    return incident.status == "completed"


async def _apply_pending(p: Platform, params: Params) -> dict[str, Any]:
    change = await rds.modify_db_instance_class(
        p.need_rds(), str(params["instance_class"]), apply_immediately=True
    )
    return change.model_dump()


async def _pending_applied(p: Platform, params: Params) -> bool:
    instance = await rds.get_db_instance(p.need_rds())
    return instance.instance_class == params["instance_class"] or instance.status == "modifying"


async def _vacuum(p: Platform, params: Params) -> dict[str, Any]:
    tables = [str(t) for t in params["tables"]]
    return await postgres.vacuum_analyze(p.need_app_db(), tables, int(params["timeout_s"]))


# -- Deployment Procedures: database migrations (the environment's app database) ---------------
async def _upgrade(p: Platform, params: Params) -> dict[str, Any]:
    change = await migrations.upgrade_database(p.need_app_db(), str(params["revision"]))
    return change.model_dump()


async def _upgraded(p: Platform, params: Params) -> bool:
    state = await migrations.get_migration_state(p.need_app_db(), str(params["revision"]))
    return params["revision"] in state.applied


async def _downgrade(p: Platform, params: Params) -> dict[str, Any]:
    change = await migrations.downgrade_database(
        p.need_app_db(), str(params["from_revision"]), str(params["to_revision"])
    )
    return change.model_dump()


async def _downgraded(p: Platform, params: Params) -> bool:
    state = await migrations.get_migration_state(p.need_app_db())
    to = params["to_revision"]
    return state.db_heads == (() if to == migrations.BASE else (to,))


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
    ActionName.ISSUE_STORE_KEY: Executor(
        act=_issue_store_key, reconcile=_store_key_issued, undo=_revoke_issued_key
    ),
    ActionName.REVOKE_STORE_KEY: Executor(act=_revoke_store_keys, reconcile=_store_keys_revoked),
    ActionName.DISABLE_API_KEY: Executor(act=_disable_keys, reconcile=_keys_disabled),
    ActionName.ISSUE_OPENAI_KEY: Executor(act=_issue_openai_key),
    ActionName.REVOKE_OPENAI_KEY: Executor(act=_revoke_openai_key, reconcile=_openai_key_revoked),
    ActionName.ENABLE_MAINTENANCE_MODE: _variable(MAINTENANCE_VARIABLE),
    ActionName.DISABLE_MAINTENANCE_MODE: _variable(MAINTENANCE_VARIABLE),
    ActionName.SCHEDULE_STATUS_MAINTENANCE: Executor(
        act=_schedule_status, reconcile=_status_opened
    ),
    ActionName.COMPLETE_STATUS_MAINTENANCE: Executor(
        act=_complete_status, reconcile=_status_completed
    ),
    ActionName.APPLY_PENDING_DB_MODIFICATIONS: Executor(
        act=_apply_pending, reconcile=_pending_applied
    ),
    ActionName.VACUUM_ANALYZE: Executor(act=_vacuum),
    ActionName.MIGRATION_UPGRADE: Executor(act=_upgrade, reconcile=_upgraded),
    ActionName.MIGRATION_DOWNGRADE: Executor(act=_downgrade, reconcile=_downgraded),
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
    ActionName.ISSUE_STORE_KEY: "new API key {key_prefix}… issued for {store_id}",
    ActionName.REVOKE_STORE_KEY: "previous API keys of {store_id} revoked",
    ActionName.DISABLE_API_KEY: "API keys of {stores} disabled",
    ActionName.ISSUE_OPENAI_KEY: "new service account {service_account_name}; OPENAI_API_KEY set",
    ActionName.REVOKE_OPENAI_KEY: "old OpenAI key {key_id} revoked",
    ActionName.ENABLE_MAINTENANCE_MODE: "maintenance mode on (MAINTENANCE_MODE=true)",
    ActionName.DISABLE_MAINTENANCE_MODE: "maintenance mode off (MAINTENANCE_MODE=false)",
    ActionName.SCHEDULE_STATUS_MAINTENANCE: "maintenance announced on the status page: {name}",
    ActionName.COMPLETE_STATUS_MAINTENANCE: "status page maintenance completed",
    ActionName.APPLY_PENDING_DB_MODIFICATIONS: "RDS pending change applied: {instance_class}",
    ActionName.VACUUM_ANALYZE: "VACUUM (ANALYZE) of {tables}",
    ActionName.MIGRATION_UPGRADE: "{environment} database migrated to {revision}",
    ActionName.MIGRATION_DOWNGRADE: "{environment} database downgraded {from_revision} →"
    " {to_revision}",
}


def done_text(action: ActionName, params: Params) -> str:
    """How the timeline and Slack say that the act happened (only once it did)."""
    try:
        return _DONE[action].format(**params)
    except (KeyError, IndexError):
        return f"{action.value} done"


async def reconcile_recorded(action: str, target: str, params: Params) -> bool | None:
    """Read the platform: did this recorded act happen? None when nothing can tell (no executor
    or no reconcile for it). For acts whose run lost its process (the approval sweeper);
    `target` "railway:api@staging" reads the staging environment's blocks."""
    try:
        found = EXECUTORS.get(ActionName(action))
    except ValueError:
        return None
    if found is None or found.reconcile is None:
        return None
    environment = target.split("@", 1)[1] if "@" in target else None

    async def maybe(block: Any) -> Any:
        with contextlib.suppress(Exception):  # a block this act does not need may be unset
            return await block.resolve(environment)
        return None

    platform = Platform(
        railway=await Railway.resolve(environment),
        rds=await maybe(Rds),
        status_page=await maybe(CustomerStatusPage),
        app_db=await maybe(AppDatabase),
        openai_admin=await maybe(OpenAiAdmin),
    )
    return bool(await found.reconcile(platform, params))
