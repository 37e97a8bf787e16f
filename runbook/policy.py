"""Policy rules (pure): thresholds, caps, budgets, who must approve what — and the floor.

The `runbook-policy` Prefect block (blocks/policy.py) is these rules plus loading; the core's
safety code depends only on this model.

Trust model (docs/approvals.md): whoever can write to the Prefect API can edit the block, so a
block never *loosens* what the acting process's environment sets (`Floor`, from `RUNBOOK_*`):
approvers, approver channels, codes, two-person actions, auto-approve, caps, budgets. Every
number is bounded; a block document outside the bounds is refused as a whole.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Literal, Self

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator

from runbook.settings import Settings

log = logging.getLogger("runbook.policy")

_CLASS_RANK = {"read": 0, "safe": 1, "destructive": 2}

# Runbook "Maintenance Windows" → "Perform updates": what the Sunday window may do, in order
MaintenanceStep = Literal["migrations", "redeploy", "rds_pending", "vacuum"]
MAINTENANCE_STEPS: tuple[MaintenanceStep, ...] = ("migrations", "redeploy", "rds_pending", "vacuum")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


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
        "disable_request_queue": "safe",
        "open_status_incident": "safe",
        "update_status_incident": "safe",
        "deploy_commit": "destructive",
        "set_service_limits": "destructive",
        "resolve_status_incident": "safe",
        "scale_replicas": "safe",
        "set_pool_size": "safe",
        "rollback_deployment": "destructive",
        "redeploy_service": "destructive",
        "restart_deployment": "destructive",
        "modify_db_instance_class": "destructive",
        "failover_db": "destructive",
        "disable_api_key": "destructive",
        "revoke_api_key": "destructive",
        "issue_store_key": "safe",  # additive; undone by revoking the new key
        "issue_openai_key": "safe",  # set with skipDeploys: nothing runs on it until a redeploy
        "revoke_openai_key": "destructive",
        # a schema change is not undone by us (a downgrade may lose data): approval, unless
        # the environment's Policy auto-approves (staging)
        "migration_upgrade": "destructive",
        "migration_downgrade": "destructive",
        # Maintenance Windows: maintenance mode is bounded by the window and undone at its end
        "enable_maintenance_mode": "safe",
        "disable_maintenance_mode": "safe",
        "schedule_status_maintenance": "safe",
        "complete_status_maintenance": "safe",
        "vacuum_analyze": "safe",  # changes no data; bounded by the statement timeout
        "apply_pending_db_modifications": "destructive",
    }


def _default_instance_prices() -> dict[str, float]:
    """On-demand USD per hour, PostgreSQL single-AZ, us-east-1 (ours; edit in the block)."""
    return {
        "db.t3.micro": 0.018,
        "db.t3.small": 0.036,
        "db.t3.medium": 0.072,
        "db.t3.large": 0.145,
        "db.m5.large": 0.178,
        "db.m5.xlarge": 0.356,
        "db.m5.2xlarge": 0.712,
        "db.r5.large": 0.25,
        "db.r5.xlarge": 0.50,
    }


def _default_two_person() -> list[str]:
    return ["modify_db_instance_class"]


def _default_preapprove() -> list[MaintenanceStep]:
    return ["redeploy", "rds_pending"]


def _default_step_budgets() -> dict[str, int]:
    """Seconds each maintenance step may take at most (a step starts only when it fits)."""
    return {"migrations": 600, "redeploy": 900, "rds_pending": 1800, "vacuum": 900}


def _threshold_problems(thresholds: dict[str, Threshold]) -> list[str]:
    problems = []
    for name, t in thresholds.items():
        for which in ("warn", "critical"):
            value = getattr(t, which)
            where = f"thresholds.{name}.{which}"
            if not math.isfinite(value):
                problems.append(f"{where} must be a finite number, got {value}")
            elif name.endswith("_pct") and not 0 < value <= 100:
                problems.append(f"{where} must be in (0, 100], got {value}")
            elif not 0 <= value <= 1_000_000:
                problems.append(f"{where} must be in [0, 1000000], got {value}")
    return problems


class Floor(BaseModel):
    """What the acting process's environment allows at most (the trust root)."""

    approvers: list[str] = []
    approver_webhooks: dict[str, SecretStr] = {}
    require_code: bool = True
    two_person_actions: list[str] = Field(default_factory=_default_two_person)
    allow_auto_approve: bool = False
    auto_approve: bool = False
    max_replicas: int = 5
    max_pool_size: int = 30
    destructive_budget_per_hour: int = 2
    mutation_budget_per_hour: int = 6
    approval_valid_s: int = 900
    approval_timeout_s: int = 900
    break_glass_after_s: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Floor:
        names = [a.strip() for a in settings.approvers.split(",") if a.strip()]
        extra = [a.strip() for a in settings.two_person_actions.split(",") if a.strip()]
        return cls(
            approvers=names,
            approver_webhooks=dict(settings.approver_webhooks),
            require_code=settings.require_code,
            two_person_actions=sorted({*_default_two_person(), *extra}),
            allow_auto_approve=settings.allow_auto_approve,
            auto_approve=settings.auto_approve,
            max_replicas=settings.max_replicas,
            max_pool_size=settings.max_pool_size,
            destructive_budget_per_hour=settings.destructive_budget_per_hour,
            mutation_budget_per_hour=settings.mutation_budget_per_hour,
            approval_valid_s=settings.approval_valid_s,
            approval_timeout_s=settings.approval_timeout_s,
            break_glass_after_s=settings.break_glass_after_s,
        )


class PolicyRules(BaseModel):
    """Thresholds, caps, budgets and approval rules for one environment.

    The acting process's environment (`RUNBOOK_APPROVERS`, `RUNBOOK_REQUIRE_CODE`,
    `RUNBOOK_ALLOW_AUTO_APPROVE`, caps and budgets) is a floor: this block can only tighten it."""

    thresholds: dict[str, Threshold] = Field(default_factory=_default_thresholds)
    rollback_error_rate_pct: float = Field(5.0, gt=0, le=100)
    recent_window_s: int = Field(
        30, ge=10, le=3600, description="'now' for cause attribution and 'is it still happening?'"
    )
    max_replicas: int = Field(5, ge=1, le=50)
    scale_down_cooldown_s: int = Field(
        1800, ge=0, le=86_400, description="before replicas go back down"
    )
    llm_restore_healthy_s: int = Field(
        60, ge=0, le=86_400, description="primary model healthy this long before switching back"
    )
    model_switch_min_interval_s: int = Field(
        300, ge=0, le=86_400, description="hysteresis: no model switch sooner after the last one"
    )
    max_pool_size: int = Field(30, ge=1, le=500)
    destructive_budget_per_hour: int = Field(2, ge=0, le=100)
    mutation_budget_per_hour: int = Field(
        6, ge=0, le=100, description="every mutating act (safe ones too) per target and hour"
    )
    approval_timeout_s: int = Field(900, ge=60, le=86_400)
    approval_valid_s: int = Field(
        900, ge=60, le=86_400, description="an approval is reused (same exact act) this long"
    )
    break_glass: bool = Field(
        True,
        description="allow the environment's break-glass (RUNBOOK_BREAK_GLASS_AFTER_S); False"
        " turns it off, a longer break_glass_after_s delays it",
    )
    break_glass_after_s: int | None = Field(
        None, ge=60, le=86_400, description="None: as the environment says"
    )
    instance_hourly_usd: dict[str, float] = Field(
        default_factory=_default_instance_prices,
        description="RDS instance class -> USD per hour (the resize form shows the difference)",
    )
    store_key_grace_s: int = Field(
        3600,
        ge=0,
        le=86_400,
        description="rotate-store-key: the old key stays valid this long after the new one was"
        " delivered and verified, before its revocation is asked for",
    )
    security_window_s: int = Field(
        3600, ge=60, le=7 * 86_400, description="security-incident: how far back the access log"
    )
    max_vcpus: float = Field(8.0, gt=0, le=64, description="vertical scaling cap per replica")
    max_memory_gb: float = Field(16.0, gt=0, le=256, description="vertical scaling cap")
    pinned_migrations: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Alembic revisions the live app depends on: db-downgrade refuses to undo"
        " them (as it does the one a live deployment's meta names as `migration`)",
    )
    action_classes: dict[str, str] = Field(default_factory=_default_action_classes)
    approval_required_for: list[str] = Field(default_factory=lambda: ["destructive"])
    auto_approve: bool = Field(
        False,
        description="e.g. staging: destructive acts need no human (only where the acting "
        "process also has RUNBOOK_ALLOW_AUTO_APPROVE=1)",
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="who may approve; only names the acting process's RUNBOOK_APPROVERS lists",
    )
    approver_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="ignored for codes: approvers' channels come from RUNBOOK_APPROVER_WEBHOOKS",
    )
    require_code: bool = True
    two_person_actions: list[str] = Field(default_factory=_default_two_person)

    # --- runbook "Key Metrics to Watch" (levels: `thresholds`) and "Maintenance Windows"
    metrics_window_s: int = Field(
        300, ge=30, le=3600, description="key-metrics watch: each rate over this many seconds"
    )
    maintenance_steps: list[MaintenanceStep] = Field(
        default_factory=lambda: list(MAINTENANCE_STEPS),
        description="the updates of the Sunday window, in order",
    )
    maintenance_step_budget_s: dict[str, int] = Field(
        default_factory=_default_step_budgets,
        description="step -> seconds it may take (60-7200); it starts only when it fits",
    )
    maintenance_preapprove: list[MaintenanceStep] = Field(
        default_factory=_default_preapprove,
        description="destructive steps whose approval is asked at notice time (48 h ahead),"
        " bound to the exact steps planned then; the others ask in the window",
    )
    maintenance_window_end_utc: str = Field(
        "04:00", description="HH:MM UTC: every maintenance step and the restore end before it"
    )
    maintenance_window_minutes: int = Field(
        120, ge=15, le=480, description="the window is this long, ending at the end time"
    )
    maintenance_restore_reserve_s: int = Field(
        600, ge=60, le=3600, description="kept free at the end of a window: verify and restore"
    )
    maintenance_notice_hours: int = Field(
        48, ge=1, le=168, description="the notice announces the window this far ahead"
    )
    maintenance_preapproval_timeout_s: int = Field(
        43_200, ge=60, le=86_400, description="how long the notice waits for its approval"
    )
    vacuum_largest_tables: int = Field(5, ge=1, le=50, description="VACUUM (ANALYZE) the N largest")
    emergency_max_minutes: int = Field(
        60, ge=5, le=240, description="an emergency window never lasts longer"
    )

    _problems: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        problems = _threshold_problems(self.thresholds)
        problems += [
            f"maintenance_step_budget_s.{k} must be in [60, 7200], got {v}"
            for k, v in self.maintenance_step_budget_s.items()
            if not 60 <= v <= 7200
        ]
        if not _HHMM.match(self.maintenance_window_end_utc):
            problems.append(
                "maintenance_window_end_utc must be HH:MM (UTC), got"
                f" {self.maintenance_window_end_utc!r}"
            )
        bad = {k: v for k, v in self.action_classes.items() if v not in _CLASS_RANK}
        problems += [
            f"action_classes.{k} must be read, safe or destructive, got {v!r}"
            for k, v in bad.items()
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def problems(self) -> list[str]:
        """Why the saved block document was not used as it is (empty when it was)."""
        return self._problems

    def with_floor(self, floor: Floor) -> Self:
        """This policy, never looser than `floor` (see the module docstring)."""
        ignored: list[str] = []
        if floor.approvers:
            allowed = {a.lower() for a in floor.approvers}
            outsiders = [a for a in self.approvers if a.lower() not in allowed]
            if outsiders:
                ignored.append(
                    f"approvers not in RUNBOOK_APPROVERS ignored: {', '.join(outsiders)}"
                )
            approvers = (
                [a for a in self.approvers if a.lower() in allowed]
                if self.approvers
                else list(floor.approvers)
            )
            if self.approvers and not approvers:
                ignored.append(
                    "no approver of the block is in RUNBOOK_APPROVERS: nobody can approve"
                )
        elif floor.require_code:
            approvers = []  # codes need channels the environment names: nobody can approve
        else:
            approvers = list(self.approvers)  # "anyone" tightened to the block's list
        hooks = dict(floor.approver_webhooks)
        if any(k not in hooks or v != hooks[k] for k, v in self.approver_webhooks.items()):
            ignored.append(
                "approver_webhooks of the block ignored (RUNBOOK_APPROVER_WEBHOOKS only)"
            )
        classes = dict(_default_action_classes())
        for action, cls_name in self.action_classes.items():
            base = classes.get(action, "destructive")
            classes[action] = max(base, cls_name, key=lambda c: _CLASS_RANK[c])
        auto = self.auto_approve and floor.allow_auto_approve
        if self.auto_approve and not floor.allow_auto_approve:
            ignored.append("auto_approve ignored: RUNBOOK_ALLOW_AUTO_APPROVE is not set")
        for note in ignored:
            log.warning("Policy: %s", note)
        policy = self.model_copy(
            update={
                "approvers": approvers,
                "approver_webhooks": hooks,
                "require_code": self.require_code or floor.require_code,
                "two_person_actions": sorted({*self.two_person_actions, *floor.two_person_actions}),
                "auto_approve": auto,
                "action_classes": classes,
                "approval_required_for": sorted({*self.approval_required_for, "destructive"}),
                "max_replicas": min(self.max_replicas, floor.max_replicas),
                "max_pool_size": min(self.max_pool_size, floor.max_pool_size),
                "destructive_budget_per_hour": min(
                    self.destructive_budget_per_hour, floor.destructive_budget_per_hour
                ),
                "mutation_budget_per_hour": min(
                    self.mutation_budget_per_hour, floor.mutation_budget_per_hour
                ),
                "approval_valid_s": min(self.approval_valid_s, floor.approval_valid_s),
                "approval_timeout_s": min(self.approval_timeout_s, floor.approval_timeout_s),
                # break-glass only where the environment allows it; a block may delay or stop it
                "break_glass_after_s": (
                    None
                    if floor.break_glass_after_s is None or not self.break_glass
                    else max(floor.break_glass_after_s, self.break_glass_after_s or 0)
                ),
            }
        )
        policy._problems = list(self._problems)
        return policy

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric) or _default_thresholds()[metric]

    def step_budget_s(self, step: str) -> int:
        return self.maintenance_step_budget_s.get(step) or _default_step_budgets().get(step, 900)


def one_problem(error: object) -> str:
    err = error if isinstance(error, dict) else {}
    where = ".".join(str(p) for p in err.get("loc", ())) or "policy"
    return f"{where}: {err.get('msg', 'invalid')}"
