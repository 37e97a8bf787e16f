"""`RUNBOOK_*` environment variables: quick starts, the demo and the tests.

Production keeps these values in Prefect Blocks (`runbook blocks configure --from-env` copies
them there once). Every block falls back to these settings when no block document exists, so a
first run needs nothing but environment variables — or nothing at all, against local defaults.

Two kinds of state are deliberately separate:
* ours — `RUNBOOK_OPS_DATABASE_URL` (ledger, alert inbox) and `RUNBOOK_REDIS_URL` (locks, dedupe);
* the platform under watch — `RUNBOOK_APP_DATABASE_URL`, `RUNBOOK_APP_REDIS_URL`, the API, Railway …
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_", extra="ignore")

    # credentials, one per source
    alertmanager_token: SecretStr | None = None
    grafana_secret: SecretStr | None = None
    grafana_timestamp_header: str | None = Field(
        None,
        description="when set (e.g. X-Grafana-Alerting-Signature-Timestamp), Grafana signs"
        ' "<unix>:" + body and the timestamp must be within the replay window',
    )
    sentry_secret: SecretStr | None = None
    pagerduty_secret: SecretStr | None = None
    generic_secret: SecretStr | None = None

    # requests
    intake_max_body: int = Field(1024 * 1024, ge=1, description="bytes; larger bodies get 413")
    intake_replay_window_s: float = Field(300.0, gt=0)

    # incidents
    intake_cooldown_s: float = Field(
        300.0, ge=0, description="after a resolution, a firing alert reopens instead of opening"
    )
    intake_routes_file: Path | None = Field(None, description="routing table (default: bundled)")
    intake_routes_block: str | None = Field(
        None, description="name of an IntakeRoutes block that overrides the file"
    )

    # dispatch
    deployment_name: str = "runbook"
    intake_dispatch: bool = Field(True, description="run the dispatcher in the intake process")
    intake_dispatch_poll_s: float = Field(1.0, gt=0)
    intake_dispatch_backoff_s: float = Field(0.5, gt=0, description="first retry delay")
    intake_dispatch_backoff_max_s: float = Field(60.0, gt=0)
    intake_dispatch_concurrency: int = Field(4, ge=1)
    intake_dispatch_timeout_s: float = Field(
        30.0, gt=0, description="time limit of one attempt (Prefect's client retries inside it)"
    )

    # ops database
    ops_database_url: SecretStr | None = None
    intake_db_pool_size: int = Field(10, ge=2)
    intake_db_timeout_s: float = Field(
        3.0, gt=0, description="wait for a database connection this long, then answer 503"
    )
    intake_persist_writers: int = Field(
        2, ge=1, description="concurrent group commits (each holds a pool connection)"
    )
    intake_persist_batch: int = Field(64, ge=1, description="deliveries per group commit, at most")

    # server
    intake_http: Literal["auto", "h11", "httptools"] = Field(
        "auto", description="uvicorn HTTP implementation: auto, h11, httptools"
    )
    intake_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="uvicorn event loop: auto, asyncio, uvloop"
    )


class Settings(BaseSettings):
    """Every `RUNBOOK_*` setting of the project, the intake's nested (same variable names)."""

    model_config = SettingsConfigDict(env_prefix="RUNBOOK_", extra="ignore")

    intake: IntakeSettings = Field(
        default_factory=IntakeSettings, description="the alert intake (RUNBOOK_INTAKE_*, …)"
    )
    retry_fast: bool = Field(
        False, description="tests only: every retry wait is zero (the retry path runs instantly)"
    )

    environment: str = Field("default", description="block document name to load")
    home: str = Field("~/.runbook", description="local state: sandbox pid files, secrets")
    demo: bool = Field(
        False, description="set by `runbook demo` only: allows the per-host approval secret file"
    )
    deployment_name: str = "runbook"
    approval_secret: SecretStr | None = Field(
        None, description="HMAC secret behind one-time codes; at least 32 bytes outside the demo"
    )
    approval_poll_s: int = 2
    requested_by: str | None = Field(
        None, description="who asked for this (manual) run: they cannot approve its acts"
    )

    # --- the safety floor: read from the environment of the process that acts; a Policy block
    # may tighten these, never loosen them (docs/approvals.md "Trust model")
    approvers: str = Field("", description="comma-separated approver names (the floor)")
    approver_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="approver -> their own Slack webhook (JSON); one-time codes go only here",
    )
    two_person_actions: str = Field(
        "", description="comma-separated actions needing two approvers, on top of the Policy's"
    )
    allow_auto_approve: bool = Field(
        False, description="auto-approve is possible at all (demo, staging); off in production"
    )
    allow_clock_override: bool = Field(
        False,
        description="honour a maintenance flow's `now` parameter for the approval given at"
        " notice time (rehearsals, tests); otherwise that approval counts only in the real window",
    )
    auto_approve_environments: str = Field(
        "",
        description="comma-separated environments whose Policy may auto-approve (with"
        " RUNBOOK_ALLOW_AUTO_APPROVE); empty: every environment this process acts on",
    )
    max_replicas: int = Field(5, ge=1, le=50)
    max_pool_size: int = Field(30, ge=1, le=500)
    destructive_budget_per_hour: int = Field(2, ge=0, le=100)
    mutation_budget_per_hour: int = Field(6, ge=0, le=100)
    approval_valid_s: int = Field(900, ge=60, le=86_400)
    break_glass_after_s: int | None = Field(
        None,
        ge=1,
        le=86_400,
        description="off by default: a two-person outage rollback goes ahead with one approver"
        " after this long without a second answer while the outage persists",
    )
    approval_timeout_s: int = Field(900, ge=1, le=86_400)
    approval_wait: Literal["auto", "pause"] = Field(
        "auto",
        description="auto: a deployment run suspends (frees its process) while it waits for an"
        " approval, other runs pause; pause: always pause",
    )
    approval_sweep_s: float = Field(
        5.0, description="how often `runbook serve` times out expired approvals of suspended runs"
    )
    serve_limit: int = Field(
        10,
        ge=1,
        description="flow runs `runbook serve` runs at once (Prefect's default is 5): suspended"
        " runs hold none, but the reruns of answered or timed-out approvals queue behind it",
    )
    serve_poll_s: float = Field(
        1.0,
        gt=0,
        description="how often `runbook serve` asks Prefect for flow runs to start (Prefect's"
        " own default is 10 s; each poll is one small API read). With `serve_events` on, runs"
        " start on Prefect's event instead and this poll is the fallback",
    )
    serve_events: bool = Field(
        True,
        description="`runbook serve` starts a run as soon as Prefect's event stream says it is"
        " startable (created, or its approval answered), not only at its next poll",
    )
    require_code: bool = True
    auto_approve: bool = False
    scale_down_cooldown_s: int | None = None
    model_switch_min_interval_s: int | None = None
    store_key_grace_s: int | None = Field(
        None, ge=0, le=86_400, description="the Policy's store_key_grace_s without a block"
    )

    # our own state
    ops_database_url: SecretStr | None = None
    redis_url: SecretStr | None = None

    # the support API under watch
    api_url: str = "http://127.0.0.1:8000"
    api_health_path: str = "/health"
    api_ready_path: str = "/health/ready"
    api_timeout_s: float = 5.0

    # the platform's data stores
    app_database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    app_redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # the app's Alembic migrations (db-migrate / db-downgrade)
    app_staging_database_url: SecretStr | None = Field(
        None,
        description="staging's app database (migrations go there first); unset: staging has"
        " none unless its Runbook App Database block names one — never production's",
    )
    app_migrations_path: str = Field(
        "", description="the app's Alembic script directory (its alembic/ folder with env.py)"
    )

    # Railway
    railway_endpoint: str = "https://backboard.railway.com/graphql/v2"
    railway_token: SecretStr | None = None
    railway_token_kind: Literal["account", "project"] = "account"
    railway_project_id: str = ""
    railway_environment_id: str = ""
    railway_service_id: str = ""
    railway_postgres_service_id: str = Field(
        "", description="a Railway-hosted Postgres service (empty: the database is not on Railway)"
    )
    railway_timeout_s: float = Field(15.0, gt=0, description="read/write timeout of one call")

    # AWS RDS
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    rds_instance_id: str = "support-agent-db"

    # LangSmith
    langsmith_url: str = "https://api.smith.langchain.com"
    langsmith_api_key: SecretStr | None = None
    langsmith_project: str = "ecommerce-support-prod"

    # status pages, name -> base URL (JSON in the environment)
    status_pages: dict[str, str] = Field(
        default_factory=lambda: {
            "openai": "https://status.openai.com",
            "shopify": "https://www.shopifystatus.com",
            "gorgias": "https://status.gorgias.com",
        }
    )

    # OpenAI-compatible probe
    llm_base_url: str = "https://api.openai.com/v1"
    llm_api_key: SecretStr | None = None
    llm_primary_model: str = "gpt-4o"
    llm_fallback_model: str = "gpt-4o-mini"

    # OpenAI admin API (rotate-openai-key): an admin key, never the app's own key
    openai_admin_url: str = "https://api.openai.com/v1"
    openai_admin_key: SecretStr | None = None
    openai_project_id: str = ""

    # DNS of the API host (§5 complete-outage check: `dig api.example.com`)
    api_host: str | None = Field(None, description="default: the host of RUNBOOK_API_URL")
    dns_nameserver: str | None = Field(
        None, description="HOST[:PORT] of the nameserver to ask (default: the system's)"
    )
    dns_timeout_s: float = Field(2.0, gt=0, description="total time for one DNS lookup")

    # email (runbook "Alert Channels": ops@example.com), SMTP
    smtp_host: str | None = Field(None, description="unset: email is not configured")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(True, description="upgrade the connection with STARTTLS")
    smtp_tls: bool = Field(False, description="implicit TLS (port 465) instead of STARTTLS")
    smtp_ca_file: str | None = Field(None, description="CA bundle to trust (a private CA)")
    smtp_timeout_s: float = Field(10.0, gt=0)
    email_from: str = "runbook@example.com"
    email_to: str = Field("ops@example.com", description="the runbook's ops mailbox")

    # customer status page (Statuspage manage API)
    statuspage_url: str = "https://api.statuspage.io/v1"
    statuspage_api_key: SecretStr | None = None
    statuspage_page_id: str = ""
    statuspage_components: dict[str, str] = Field(
        default_factory=dict, description='component name -> id (JSON), e.g. {"API": "abc"}'
    )

    # our own intake, for findings of ours that become alerts (critical health, metric breaches)
    intake_url: str | None = Field(None, description="e.g. http://127.0.0.1:8080")
    generic_secret: SecretStr | None = Field(None, description="the intake's generic HMAC secret")

    # notifications
    slack_webhook_url: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_routing_key: SecretStr | None = None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once; tests call `get_settings.cache_clear()`)."""
    return Settings()
