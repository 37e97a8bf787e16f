"""`runbook serve`: every runbook flow as a deployment named "runbook", served by this process.

The same deployments `prefect.yaml` declares for work pools; this is the no-infrastructure way
(demo, a single VM). Schedules live in one place, `prefect.yaml` (cron, UTC): `serve` reads them
from there rather than repeating them. Stopping `serve` pauses its deployments (Prefect's
behaviour): restart it to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.schedules import CronSchedule

from flows.registry import FLOWS, load_flow
from runbook.errors import ConfigurationError
from runbook.settings import get_settings

log = logging.getLogger("runbook.serve")
# a flow run of ours became startable: created by a dispatch / `run_deployment` (Scheduled), or a
# suspended run answered (Prefect's resume sets it Scheduled, named "Resuming")
STARTABLE_EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.Resuming")


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
    pickup = asyncio.create_task(pick_up_on_events(runner)) if settings.serve_events else None
    try:
        await runner.start()
    finally:
        for task in (sweeper, pickup):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def pick_up_on_events(runner: Any, retry_s: float = 5.0) -> None:
    """Event-driven pickup: start a run as soon as Prefect says it is startable, instead of
    at the runner's next poll (the poll stays, as the fallback that needs no events).

    Subscribes to Prefect's event stream (`/api/events/out`, the same websocket the UI uses)
    for our deployments' runs becoming Scheduled or Resuming, reads that one run and hands it
    to the runner (`start_now`). The runner's own bookkeeping (`_submitting_flow_run_ids`, then
    the server's Pending transition) keeps a run from being started twice when an event and a
    poll meet."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    starting: set[asyncio.Task[None]] = set()
    names = EventFilter(event=EventNameFilter(name=list(STARTABLE_EVENTS)))  # type: ignore[call-arg]
    try:
        while True:
            try:
                async with get_events_subscriber(filter=names) as events:
                    async for event in events:
                        if _ours(event, runner):
                            run_id = event.resource.id.removeprefix("prefect.flow-run.")
                            task = asyncio.create_task(start_now(runner, run_id))
                            starting.add(task)
                            task.add_done_callback(starting.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no events (an old server, a proxy): polling still works
                log.warning(
                    "event-driven pickup unavailable (%s); the %g s poll starts runs; retrying",
                    exc,
                    get_settings().serve_poll_s,
                )
                await asyncio.sleep(retry_s)
    finally:
        for task in list(starting):
            task.cancel()


async def start_now(runner: Any, run_id: str) -> None:
    """Hand flow run `run_id` to the runner if it is startable now.

    One read of that run, not a poll: a poll is also a write on the Prefect server (it marks
    every served deployment ready), and on the embedded SQLite extra writers at the moment of
    an act are what turns into "database is locked" and a 2-s client retry. Prefect emits the
    event inside the transaction that sets the state, so the read can still see the state
    before it: read again shortly after."""
    from uuid import UUID

    for delay in (0.0, 0.05, 0.15, 0.3):
        await asyncio.sleep(delay)
        poller = getattr(runner, "_scheduled_run_poller", None)  # Prefect 3.9 (pyproject)
        if poller is None or poller.stopping:
            return
        if any(str(i) == run_id for i in poller._submitting_flow_run_ids):
            return  # the regular poll took it
        try:
            flow_run = await poller._client.read_flow_run(UUID(run_id))
        except Exception as exc:  # the regular poll is still there
            log.warning("event-driven pickup: could not read flow run %s (%s)", run_id, exc)
            return
        state = flow_run.state
        if state is None or state.is_final() or state.is_running() or state.is_pending():
            return  # started elsewhere, or over
        due = flow_run.next_scheduled_start_time
        if state.is_scheduled() and (due is None or due.timestamp() <= time.time() + 1):
            await poller._submit_scheduled_flow_runs(
                flow_run_response=[flow_run], task_group=poller._runs_task_group
            )
            return


def _ours(event: Any, runner: Any) -> bool:
    """Is this flow-run event about a run of one of the deployments this runner serves, due
    now? (Runs a schedule created ahead of time are the regular poll's.)"""
    if any(r.get("prefect.resource.id") == "prefect.tag.auto-scheduled" for r in event.related):
        return False
    registry = getattr(runner, "_deployment_registry", None)
    ids = {str(i) for i in registry.get_deployment_ids()} if registry is not None else set()
    for related in event.related:
        resource_id = related.get("prefect.resource.id", "")
        if resource_id.startswith("prefect.deployment."):
            return not ids or resource_id.removeprefix("prefect.deployment.") in ids
    return False
