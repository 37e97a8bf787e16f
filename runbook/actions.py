"""Actions: what a flow may do to the platform, their class, and the idempotency key.

Classes (policy decides per action name, see blocks/policy.py):
* read — observe only; never gated;
* safe — bounded and reversible (switch to the fallback model, scale within a cap, …);
* destructive — rollback, redeploy/restart, RDS class change, failover, disabling/revoking keys,
  migration downgrade: never without an approval unless the environment's policy auto-approves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runbook.policy import PolicyRules


class ActionClass(StrEnum):
    READ = "read"
    SAFE = "safe"
    DESTRUCTIVE = "destructive"


class ActionRequest(BaseModel):
    """One act a flow wants to perform for one incident, with the evidence behind it."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    action: str = Field(description="e.g. rollback_deployment")
    target: str = Field(description="e.g. railway:service/api")
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict, description="key figures seen")
    reversible: bool = False
    undo_hint: str = ""
    two_person: bool = Field(False, description="force two approvers (e.g. outage rollback)")
    break_glass: bool = Field(
        False, description="a two-person act the Policy's break-glass may let one approver do"
    )
    requested_by: str | None = Field(
        None, description="who asked for the run (a manual run's --as): never its approver"
    )
    approval_timeout_s: int | None = Field(
        None,
        ge=60,
        le=86_400,
        description="wait this long for the approval instead of the Policy's approval_timeout_s"
        " (an approval asked ahead of time: the maintenance notice)",
    )

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}:{self.action}:{self.target}"


def action_class(policy: PolicyRules, action: str) -> ActionClass:
    """The policy's class for `action`; anything the policy does not know is destructive."""
    return ActionClass(policy.action_classes.get(action, ActionClass.DESTRUCTIVE.value))


def needs_approval(policy: PolicyRules, action: str) -> bool:
    """Whether a human must approve `action` in this environment."""
    cls = action_class(policy, action)
    if cls is ActionClass.READ:
        return False
    if cls is ActionClass.DESTRUCTIVE and policy.auto_approve:
        return False
    return cls.value in policy.approval_required_for or action in policy.approval_required_for


def approvals_needed(policy: PolicyRules, request: ActionRequest) -> int:
    """How many distinct approvers the request needs (two-person actions need two)."""
    return 2 if request.two_person or request.action in policy.two_person_actions else 1
