"""What a flow's `decide()` returns when it wants to change something: a typed action spec.

Data, not a string the flow branches on again: the action (one of `ActionName`), its target,
its exact parameters (what an approval approves), the Policy class it has now, why, and what
undoing it would set back. `flows/acts.py` maps every `ActionName` to the one executor that
performs it; a name without an executor fails a test.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runbook.actions import ActionClass, action_class
from runbook.policy import PolicyRules

MODEL_VARIABLE = "DEFAULT_MODEL"  # the platform variable that picks the LLM
POOL_VARIABLE = "DATABASE_POOL_SIZE"
QUEUE_VARIABLE = "REQUEST_QUEUE_ENABLED"
OPENAI_KEY_VARIABLE = "OPENAI_API_KEY"  # the platform variable with the app's OpenAI key
MAINTENANCE_VARIABLE = "MAINTENANCE_MODE"  # the app answers customers with a maintenance page


class ActionName(StrEnum):
    SWITCH_MODEL = "switch_model"
    RESTORE_MODEL = "restore_model"
    ENABLE_REQUEST_QUEUE = "enable_request_queue"
    DISABLE_REQUEST_QUEUE = "disable_request_queue"
    SET_POOL_SIZE = "set_pool_size"
    SCALE_REPLICAS = "scale_replicas"
    ROLLBACK_DEPLOYMENT = "rollback_deployment"
    OPEN_STATUS_INCIDENT = "open_status_incident"  # the customer status page (Statuspage)
    UPDATE_STATUS_INCIDENT = "update_status_incident"
    RESOLVE_STATUS_INCIDENT = "resolve_status_incident"
    REDEPLOY_SERVICE = "redeploy_service"
    FAILOVER_DB = "failover_db"
    DEPLOY_COMMIT = "deploy_commit"  # Deployment Procedures: manual deploy
    SET_SERVICE_LIMITS = "set_service_limits"  # Scaling: vertical (it redeploys)
    MODIFY_DB_INSTANCE_CLASS = "modify_db_instance_class"  # Scaling: RDS resize
    # Deployment Procedures: database migrations (the app's Alembic scripts)
    MIGRATION_UPGRADE = "migration_upgrade"  # `alembic upgrade <revision>`
    MIGRATION_DOWNGRADE = "migration_downgrade"  # `alembic downgrade -1`
    # Security Procedures
    ISSUE_STORE_KEY = "issue_store_key"  # a new store API key (its hash in the app database)
    REVOKE_STORE_KEY = "revoke_api_key"  # a store's previous keys, after rotation
    DISABLE_API_KEY = "disable_api_key"  # contain a security incident: the affected store keys
    ISSUE_OPENAI_KEY = "issue_openai_key"  # new service account, its key into OPENAI_API_KEY
    REVOKE_OPENAI_KEY = "revoke_openai_key"  # the old key / service account, after rotation
    # Maintenance Windows
    ENABLE_MAINTENANCE_MODE = "enable_maintenance_mode"
    DISABLE_MAINTENANCE_MODE = "disable_maintenance_mode"
    SCHEDULE_STATUS_MAINTENANCE = "schedule_status_maintenance"  # the 48-hour notice
    COMPLETE_STATUS_MAINTENANCE = "complete_status_maintenance"
    APPLY_PENDING_DB_MODIFICATIONS = "apply_pending_db_modifications"  # e.g. a deferred resize
    VACUUM_ANALYZE = "vacuum_analyze"


class ActSpec(BaseModel):
    """One act a flow decided on."""

    model_config = ConfigDict(frozen=True)

    action: ActionName
    target: str
    params: dict[str, Any] = Field(default_factory=dict)
    action_class: ActionClass
    why: str
    reversible: bool = False
    undo_params: dict[str, Any] | None = Field(
        None, description="what undoing sets back (None: not reversible by us)"
    )
    two_person: bool = Field(False, description="two distinct approvers (e.g. outage rollback)")
    break_glass: bool = Field(False, description="the Policy's break-glass may apply")


def spec(
    policy: PolicyRules,
    action: ActionName,
    target: str,
    why: str,
    params: dict[str, Any] | None = None,
    undo_params: dict[str, Any] | None = None,
    *,
    two_person: bool = False,
    break_glass: bool = False,
) -> ActSpec:
    """An `ActSpec`, classed by the Policy (a pure helper for `decide()`)."""
    return ActSpec(
        two_person=two_person,
        break_glass=break_glass,
        action=action,
        target=target,
        params=params or {},
        action_class=action_class(policy, action.value),
        why=why,
        reversible=undo_params is not None,
        undo_params=undo_params,
    )


def model_switch(policy: PolicyRules, target: str, why: str, to: str, back: str | None) -> ActSpec:
    """The one switch-model request every flow uses (§1, §2, §3)."""
    return spec(
        policy,
        ActionName.SWITCH_MODEL,
        target,
        why,
        {MODEL_VARIABLE: to},
        {MODEL_VARIABLE: back} if back and back != to else None,
    )
