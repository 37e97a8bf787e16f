"""`runbook serve`: every runbook flow as a deployment named "runbook", served by this process.

The same deployments `prefect.yaml` declares for work pools; this is the no-infrastructure way
(demo, a single VM). Schedules live in one place, `prefect.yaml` (cron, UTC): `serve` reads them
from there rather than repeating them. Stopping `serve` pauses its deployments (Prefect's
behaviour): restart it to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.schedules import CronSchedule

from flows.registry import FLOWS, load_flow
from runbook.errors import ConfigurationError
from runbook.settings import get_settings


def prefect_yaml_path() -> Path:
    """`RUNBOOK_PREFECT_YAML`, else the project's own `prefect.yaml` (beside `flows/`)."""
    configured = os.environ.get("RUNBOOK_PREFECT_YAML")
    path = Path(configured) if configured else Path(__file__).resolve().parents[1] / "prefect.yaml"
    if not path.is_file():
        raise ConfigurationError(
            f"no prefect.yaml at {path}: set RUNBOOK_PREFECT_YAML to the project's prefect.yaml"
        )
    return path


def schedules_from_yaml(path: Path | None = None) -> dict[str, list[CronSchedule]]:
    """Flow name → its active cron schedules, as `prefect.yaml` declares them."""
    data = yaml.safe_load((path or prefect_yaml_path()).read_text()) or {}
    by_target = {target: name for name, target in FLOWS.items()}
    found: dict[str, list[CronSchedule]] = {}
    for deployment in data.get("deployments") or []:
        file, _, function = str(deployment.get("entrypoint", "")).partition(":")
        target = file.removesuffix(".py").replace("/", ".") + ":" + function
        name = by_target.get(target)
        if name is None:
            continue
        found[name] = [
            CronSchedule(cron=s["cron"], timezone=s.get("timezone") or "UTC")
            for s in deployment.get("schedules") or []
            if s.get("cron") and s.get("active", True)
        ]
    return found


async def build_deployments(
    with_schedules: bool = True, only: Collection[str] | None = None
) -> list[Any]:
    """Every flow (or `only` these) as the deployment `serve` registers, with its schedules."""
    name = get_settings().deployment_name
    schedules = schedules_from_yaml() if with_schedules else {}
    deployments = []
    for flow_name in FLOWS:
        if only is not None and flow_name not in only:
            continue
        flow_obj = load_flow(flow_name)
        deployments.append(
            await flow_obj.ato_deployment(
                name=name,
                schedules=schedules.get(flow_name) or None,
                tags=["runbook"],
                description=flow_obj.description,
            )
        )
    return deployments


async def serve(with_schedules: bool = True, only: Collection[str] | None = None) -> None:
    """Register the deployments and execute their runs until interrupted; meanwhile the
    approval sweeper times out approvals of suspended runs that nobody answered.

    Each flow is handed to the runner as the flow object (`Runner.aadd_flow`), not only as a
    deployment: Prefect then starts a run by forking it from the warm process
    (`flows.warm_start`) instead of a fresh `python -m prefect.engine` that imports everything
    and loads the flow from its file again (~3 s before the first check on 2 cores)."""
    from prefect.runner import Runner

    from flows import warm_start
    from flows.approval_sweeper import run_sweeper

    settings = get_settings()
    warm = warm_start.install()
    runner = Runner(
        name=settings.deployment_name,
        pause_on_shutdown=True,
        query_seconds=settings.serve_poll_s,
        limit=settings.serve_limit,
    )
    schedules = schedules_from_yaml() if with_schedules else {}
    served = []
    for flow_name in FLOWS:
        if only is not None and flow_name not in only:
            continue
        flow_obj = load_flow(flow_name)
        await runner.aadd_flow(
            flow_obj,
            name=settings.deployment_name,
            schedules=schedules.get(flow_name) or None,
            tags=["runbook"],
            description=flow_obj.description,
        )
        served.append(flow_name)
    print(
        f"serving {len(served)} flows as deployments '<flow>/{settings.deployment_name}'"
        f" (runs start {'warm, forked' if warm else 'in a fresh process'}; polling Prefect"
        f" every {settings.serve_poll_s:g} s): {', '.join(served)}",
        flush=True,
    )
    sweeper = asyncio.create_task(run_sweeper(settings.approval_sweep_s))
    try:
        await runner.start()
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
