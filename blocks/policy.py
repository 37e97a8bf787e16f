"""Policy: the runbook's Key Metrics thresholds, caps, budgets and who must approve what.

Defaults are the runbook's own numbers where it gives them (Key Metrics table, "rollback if
>5 %", "scale to 5 replicas", "pool size 30"); the rest are our choices, documented in
docs/policy.md. An environment's policy is a saved block document of the same name.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, SecretStr

from blocks.base import RunbookBlock
from runbook.settings import Settings


class Threshold(BaseModel):
    """Warn/critical pair; `higher_is_worse=False` for rates that should stay high."""

    warn: float
    critical: float
    higher_is_worse: bool = True


def _default_thresholds() -> dict[str, Threshold]:
    return {
        # runbook: Key Metrics to Watch
        "error_rate_pct": Threshold(warn=0.5, critical=2.0),
        "p99_latency_s": Threshold(warn=5.0, critical=10.0),
        "automation_rate_pct": Threshold(warn=75.0, critical=60.0, higher_is_worse=False),
        "escalation_rate_pct": Threshold(warn=20.0, critical=30.0),
        "db_connections_pct": Threshold(warn=80.0, critical=95.0),
        # ours (the runbook gives no number)
        "health_response_s": Threshold(warn=1.0, critical=5.0),
        "slow_query_mean_ms": Threshold(warn=500.0, critical=5_000.0),
        "idle_in_transaction": Threshold(warn=5.0, critical=20.0),
        "redis_latency_ms": Threshold(warn=10.0, critical=100.0),
        "redis_memory_pct": Threshold(warn=80.0, critical=95.0),
    }


def _default_action_classes() -> dict[str, str]:
    return {
        "switch_model": "safe",
        "restore_model": "safe",
        "enable_request_queue": "safe",
        "scale_replicas": "safe",
        "set_pool_size": "safe",
        "rollback_deployment": "destructive",
        "redeploy_service": "destructive",
        "restart_deployment": "destructive",
        "modify_db_instance_class": "destructive",
        "failover_db": "destructive",
        "disable_api_key": "destructive",
        "revoke_api_key": "destructive",
        "migration_downgrade": "destructive",
    }


class Policy(RunbookBlock):
    """Thresholds, caps, budgets and approval rules for one environment."""

    _block_type_name = "Runbook Policy"
    _block_type_slug = "runbook-policy"

    thresholds: dict[str, Threshold] = Field(default_factory=_default_thresholds)
    rollback_error_rate_pct: float = 5.0
    recent_window_s: int = Field(
        30, ge=10, description="'now' for cause attribution and 'is it still happening?'"
    )
    max_replicas: int = Field(5, ge=1, le=50)
    scale_down_cooldown_s: int = Field(1800, ge=0, description="before replicas go back down")
    llm_restore_healthy_s: int = Field(
        60, ge=0, description="primary model healthy this long before switching back"
    )
    max_pool_size: int = Field(30, ge=1)
    destructive_budget_per_hour: int = Field(2, ge=0)
    approval_timeout_s: int = Field(900, ge=1)
    action_classes: dict[str, str] = Field(default_factory=_default_action_classes)
    approval_required_for: list[str] = Field(default_factory=lambda: ["destructive"])
    auto_approve: bool = Field(False, description="e.g. staging: destructive acts need no human")
    approvers: list[str] = Field(
        default_factory=list, description="who may approve; empty = anyone with a valid code"
    )
    approver_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="approver -> Slack webhook of their own DM/private channel for codes",
    )
    require_code: bool = True
    two_person_actions: list[str] = Field(default_factory=lambda: ["modify_db_instance_class"])

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        extra = {}
        if settings.scale_down_cooldown_s is not None:
            extra["scale_down_cooldown_s"] = settings.scale_down_cooldown_s
        return cls(
            **extra,
            approvers=[a.strip() for a in settings.approvers.split(",") if a.strip()],
            approval_timeout_s=settings.approval_timeout_s,
            require_code=settings.require_code,
            auto_approve=settings.auto_approve,
        )

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric) or _default_thresholds()[metric]
