"""Intake's `RUNBOOK_*` settings: one secret per source, limits, the dispatcher's pace.

A source whose secret is not set rejects every delivery with 401 (fail closed).
"""

from __future__ import annotations

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
