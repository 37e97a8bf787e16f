"""Which flow answers to which name (the names the Prefect UI, `runbook run` and intake use)."""

from __future__ import annotations

import importlib
from typing import Any

# flow name -> "module:function"; imported lazily so the CLI starts fast
FLOWS: dict[str, str] = {
    "health-check": "flows.health:health_check",
    "high-error-rate": "flows.high_error_rate:high_error_rate",
    "high-latency": "flows.high_latency:high_latency",
    "llm-provider": "flows.llm_provider:llm_provider",
    "database-connections": "flows.database_connections:database_connections",
    "complete-outage": "flows.complete_outage:complete_outage",
    "scale-replicas": "flows.scaling:scale_replicas",
    "scale-vertical": "flows.scaling:scale_vertical",
    "rds-resize": "flows.rds_resize:rds_resize",
    "deploy-watch": "flows.deployment:deploy_watch",
    "manual-deploy": "flows.deployment:manual_deploy",
    "rollback": "flows.deployment:rollback",
    "db-migrate": "flows.migrations:db_migrate",
    "db-downgrade": "flows.migrations:db_downgrade",
    "rotate-store-key": "flows.rotate_store_key:rotate_store_key",
    "rotate-openai-key": "flows.rotate_openai_key:rotate_openai_key",
    "security-incident": "flows.security_incident:security_incident",
    "metrics-watch": "flows.metrics_watch:metrics_watch",
    "maintenance-notice": "flows.maintenance:maintenance_notice",
    "scheduled-maintenance": "flows.maintenance:scheduled_maintenance",
    "emergency-maintenance": "flows.emergency_maintenance:emergency_maintenance",
}


def load_flow(name: str) -> Any:
    """The flow object for `name`; KeyError names the known flows."""
    try:
        target = FLOWS[name]
    except KeyError:
        known = ", ".join(sorted(FLOWS))
        raise KeyError(f"unknown flow {name!r}; known flows: {known}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
