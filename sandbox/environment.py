"""The environment a sandbox hands to clients: every `RUNBOOK_*` setting our blocks read, pointing
at the fakes, with fixed but non-trivial credentials (a secrets grep can find any leak). That
includes the nameserver that answers `RUNBOOK_API_HOST` and the mail server (STARTTLS with the
sandbox's own CA in `RUNBOOK_SMTP_CA_FILE`, AUTH with `RUNBOOK_SMTP_USERNAME`/`_PASSWORD`).

`extra_env` names settings the project does not have yet (our own customer status page, the
OpenAI admin API for key rotation).
"""

from __future__ import annotations

import json
from typing import Any

from sandbox import app_migrations
from sandbox.openai_admin import PROJECT_ID as OPENAI_PROJECT_ID

SECRETS = {
    "railway_token": "rw-sbx-7f3a9c2e51d84b6f0a2c",
    "aws_access_key_id": "AKIASBX7Q2M4X9ZK3TPL",
    "aws_secret_access_key": "sbx-aws-secret-3e8c1f0a9b7d4e2c6a5f",
    "langsmith_api_key": "lsv2_sbx_91c4e7a2b3d84f6e5a7c",
    "llm_api_key": "sk-sbx-5d2f8a1c9e7b4a3d6f1e",
    "slack_path": "/slack/services/T0SBX4/B0SBX7/sbxhook4c8e2a9f71d3b5e6",
    "pagerduty_routing_key": "sbx0e6f3b9a2c7d41f58e1a9b3c7d2e4",
    "statuspage_api_key": "sbx-sp-oauth-6b1d9e4c2a7f83",
    "openai_admin_key": "sk-admin-sbx-2c8f4e6a1b9d7305",
    "smtp_password": "sbx-smtp-pw-8d3f1a6c2e9b47",
}
STATUSPAGE_PAGE_ID = "sbxpage01"
API_HOST = "api.example.com"  # the runbook's `dig api.example.com`; the sandbox's DNS answers it
SMTP_USERNAME = "runbook-sbx"
OPS_MAILBOX = "ops@example.com"


def client_env(
    ports: dict[str, int],
    *,
    api_db: str,
    api_redis: str,
    ids: dict[str, Any],
    rds_instance_id: str,
    langsmith_project: str,
    primary_model: str,
    fallback_model: str,
    smtp_ca_file: str,
    staging_db: str,
) -> dict[str, str]:
    fakes = f"http://127.0.0.1:{ports['fakes']}"
    return {
        "RUNBOOK_API_URL": f"http://127.0.0.1:{ports['api']}",
        "RUNBOOK_APP_DATABASE_URL": api_db,
        # the app's Alembic project and staging's database: db-migrate goes there first
        "RUNBOOK_APP_STAGING_DATABASE_URL": staging_db,
        "RUNBOOK_APP_MIGRATIONS_PATH": str(app_migrations.PATH),
        "RUNBOOK_APP_REDIS_URL": api_redis,
        "RUNBOOK_RAILWAY_ENDPOINT": f"{fakes}/graphql/v2",
        "RUNBOOK_RAILWAY_TOKEN": SECRETS["railway_token"],
        "RUNBOOK_RAILWAY_PROJECT_ID": ids["railway_project_id"],
        "RUNBOOK_RAILWAY_ENVIRONMENT_ID": ids["railway_environment_id"],
        "RUNBOOK_RAILWAY_SERVICE_ID": ids["railway_service_id"],
        "RUNBOOK_AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['aws']}",
        "RUNBOOK_AWS_REGION": "us-east-1",
        "RUNBOOK_AWS_ACCESS_KEY_ID": SECRETS["aws_access_key_id"],
        "RUNBOOK_AWS_SECRET_ACCESS_KEY": SECRETS["aws_secret_access_key"],
        "RUNBOOK_RDS_INSTANCE_ID": rds_instance_id,
        "RUNBOOK_LANGSMITH_URL": f"{fakes}/langsmith",
        "RUNBOOK_LANGSMITH_API_KEY": SECRETS["langsmith_api_key"],
        "RUNBOOK_LANGSMITH_PROJECT": langsmith_project,
        "RUNBOOK_STATUS_PAGES": json.dumps(
            {n: f"{fakes}/status/{n}" for n in ("openai", "shopify", "gorgias")}
        ),
        "RUNBOOK_LLM_BASE_URL": f"{fakes}/openai/v1",
        "RUNBOOK_LLM_API_KEY": SECRETS["llm_api_key"],
        "RUNBOOK_LLM_PRIMARY_MODEL": primary_model,
        "RUNBOOK_LLM_FALLBACK_MODEL": fallback_model,
        "RUNBOOK_SLACK_WEBHOOK_URL": f"{fakes}{SECRETS['slack_path']}",
        "RUNBOOK_PAGERDUTY_EVENTS_URL": f"{fakes}/pagerduty/v2/enqueue",
        "RUNBOOK_PAGERDUTY_ROUTING_KEY": SECRETS["pagerduty_routing_key"],
        "RUNBOOK_API_HOST": API_HOST,
        "RUNBOOK_DNS_NAMESERVER": f"127.0.0.1:{ports['dns']}",
        "RUNBOOK_SMTP_HOST": "127.0.0.1",
        "RUNBOOK_SMTP_PORT": str(ports["smtp"]),
        "RUNBOOK_SMTP_USERNAME": SMTP_USERNAME,
        "RUNBOOK_SMTP_PASSWORD": SECRETS["smtp_password"],
        "RUNBOOK_SMTP_STARTTLS": "true",
        "RUNBOOK_SMTP_CA_FILE": smtp_ca_file,
        "RUNBOOK_EMAIL_TO": OPS_MAILBOX,
        "RUNBOOK_SANDBOX_CONTROL_URL": f"{fakes}/control",
    }


def extra_env(ports: dict[str, int]) -> dict[str, str]:
    """Proposed names for settings the project lacks yet: our customer status page, the
    OpenAI admin API (key rotation)."""
    return {
        "RUNBOOK_STATUSPAGE_URL": f"http://127.0.0.1:{ports['fakes']}/statuspage/v1",
        "RUNBOOK_STATUSPAGE_API_KEY": SECRETS["statuspage_api_key"],
        "RUNBOOK_STATUSPAGE_COMPONENTS": json.dumps(
            {"Support assistant": "cmp-assistant", "Chat widget": "cmp-widget"}
        ),
        "RUNBOOK_STATUSPAGE_PAGE_ID": STATUSPAGE_PAGE_ID,
        "RUNBOOK_OPENAI_ADMIN_URL": f"http://127.0.0.1:{ports['fakes']}/openai/v1",
        "RUNBOOK_OPENAI_ADMIN_KEY": SECRETS["openai_admin_key"],
        "RUNBOOK_OPENAI_PROJECT_ID": OPENAI_PROJECT_ID,
    }
