"""Warm start for served flow runs: fork each run from a process that has already imported Prefect
and every runbook flow, instead of spawning a fresh interpreter that imports them again.

Prefect's runner starts every served flow run in a `multiprocessing` "spawn" child
(`prefect.flow_engine.run_flow_in_subprocess`, "spawn" hard-coded). That child imports Prefect
and the flow's modules from scratch: about 2 s of CPU, 60 % of the time from alert to first action
(docs/benchmarks.md). Here the runner uses the same call with a "forkserver" context instead: one
helper process (started with `runbook serve`, a child of it) imports Prefect's engine and every
module in `flows.registry` once; each flow run is then a `fork()` of that helper.

Isolation stays what it was: every flow run is its own process with its own memory, so one run
crashing (or being SIGKILLed) cannot take another down, and the runner still watches, cancels and
kills each run by its own PID. The helper holds no connections, threads or event loops (it only
imported modules), and each child re-reads its environment and settings as a spawned one does.

Prefect documents the hook: `prefect.runner._starter_direct` "uses module-level
`run_flow_in_subprocess` reference -- patch the module to override". `install()` does exactly
that, in the `runbook serve` process only. `RUNBOOK_WARM_START=0` turns it off (plain spawn).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.context
import os
from collections.abc import Iterable, Iterator
from functools import wraps
from typing import Any

from flows.registry import FLOWS

_context: multiprocessing.context.BaseContext | None = None


def preload_modules() -> list[str]:
    """What the fork server imports once: Prefect's engine and every flow's module."""
    modules = {target.split(":")[0] for target in FLOWS.values()}
    # runbook.cli: each child re-runs the `runbook` console script as __mp_main__ (multiprocessing
    # prepares every child so); with the CLI already imported that is a dictionary lookup
    return [
        "prefect.flow_engine",
        "prefect.engine",
        "runbook.cli",
        "flows.fork_preload",
        *sorted(modules),
    ]


def fork_context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its preload list set (the server starts on first use)."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(preload_modules())
        _context = ctx
    return _context


def warm_up() -> None:
    """Start the fork server now (it imports in the background of the first run otherwise)."""
    from multiprocessing import forkserver

    fork_context()
    forkserver.ensure_running()


def by_reference(flow: Any) -> str | None:
    """The registry name a runbook flow is sent to its run process by, instead of the pickled
    flow. A module's attribute is the Flow object, not its function, so cloudpickle copies the
    function *by value* with only the globals it names at run time — annotations that are
    strings (`from __future__ import annotations`) then point at names the copy lacks, and
    Prefect's parameter validation fails ("`RollbackModel` is not fully defined"). The child
    looks the flow up in its already-imported module instead. None: not a registry flow."""
    name = getattr(flow, "name", None)
    if name in FLOWS and FLOWS[name].split(":")[0] == getattr(flow.fn, "__module__", None):
        return str(name)
    return None


@contextlib.contextmanager
def _no_external_suspension_watch(*args: Any, **kwargs: Any) -> Iterator[None]:
    """Stands in, in a forked run, for Prefect's `observe_flow_run_suspension`: a thread with its
    own event loop, API client and event subscription, which the engine waits for before it
    marks the run Running, so that a run suspended *from outside* (another process setting its
    state Suspended) stops at once. Our flows suspend only themselves (`asuspend_flow_run` marks
    that directly, without the watcher), and an operator stops a run by cancelling it; a run
    suspended from outside would run on in its process."""
    yield


def run_flow_in_forkserver(
    flow: Any,
    flow_run: Any = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Iterable[Any] | None = None,
    context: dict[str, Any] | None = None,
    env: dict[str, str | None] | None = None,
) -> multiprocessing.process.BaseProcess:
    """`prefect.flow_engine.run_flow_in_subprocess`, line for line, with a forked (preloaded)
    child instead of a spawned one. Pinned to Prefect 3.9 (pyproject)."""
    from prefect.context import SettingsContext, get_settings_context, serialize_context
    from prefect.engine import handle_engine_signals
    from prefect.flow_engine import (
        _CONTROL_CHANNEL_ENV_KEYS,
        _run_serialized_call_with_control_bootstrap,
        _runtime_subprocess_env,
        run_flow,
    )
    from prefect.settings.context import get_current_settings
    from prefect.utilities.callables import cloudpickle_wrapped_call
    from prefect.utilities.processutils import sanitize_subprocess_env

    @wraps(run_flow)
    def run_flow_with_env(
        *args: Any,
        env: dict[str, str | None] | None = None,
        remove_env: set[str] | None = None,
        registry_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        for key in remove_env or ():
            os.environ.pop(key, None)
        os.environ.update(_runtime_subprocess_env(env))
        from runbook.settings import get_settings

        get_settings.cache_clear()  # imported in the fork server, with its environment
        if registry_name is not None:  # the module's own flow object (see `by_reference`)
            from flows.registry import load_flow

            kwargs["flow"] = load_flow(registry_name)
        import prefect.flow_engine

        from flows.fork_preload import settings_for_this_run, without_same_settings

        settings = settings_for_this_run()
        kwargs["context"] = without_same_settings(kwargs.get("context"), settings)
        # no watcher for suspensions from outside (see `_no_external_suspension_watch`)
        prefect.flow_engine.observe_flow_run_suspension = _no_external_suspension_watch  # type: ignore[attr-defined]
        settings_context = get_settings_context()
        with (
            SettingsContext(profile=settings_context.profile, settings=settings),
            handle_engine_signals(getattr(flow_run, "id", None)),
        ):
            maybe_coro = run_flow(*args, **kwargs)
            if asyncio.iscoroutine(maybe_coro):
                asyncio.run(maybe_coro)

    merged_env: dict[str, str | None] = (
        dict[str, str | None](get_current_settings().to_environment_variables(exclude_unset=True))
        | dict(os.environ)
        | {"PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false"}
        | (env or {})
    )
    sanitized_merged_env = sanitize_subprocess_env(merged_env)
    runtime_env = _runtime_subprocess_env(sanitized_merged_env)
    startup_env = {
        key: value
        for key, value in sanitized_merged_env.items()
        if key in _CONTROL_CHANNEL_ENV_KEYS
    }
    registry_name = by_reference(flow)
    wrapped_call = cloudpickle_wrapped_call(
        run_flow_with_env,
        env=runtime_env,
        remove_env={key for key, value in merged_env.items() if value is None},
        registry_name=registry_name,
        flow=None if registry_name else flow,
        flow_run=flow_run,
        parameters=parameters,
        wait_for=wait_for,
        context=context or serialize_context(),
    )
    process = fork_context().Process(  # type: ignore[attr-defined]
        target=_run_serialized_call_with_control_bootstrap,
        args=(wrapped_call.args[0], startup_env),  # type: ignore[attr-defined]
    )
    process.start()
    return process  # type: ignore[no-any-return]


def enabled() -> bool:
    return os.environ.get("RUNBOOK_WARM_START", "1").strip().lower() not in {"0", "false", "no"}


def install() -> bool:
    """Point Prefect's direct starter at the warm (forkserver) start; True if installed."""
    if not enabled():
        return False
    import prefect.runner._starter_direct as starter

    starter.run_flow_in_subprocess = run_flow_in_forkserver  # type: ignore[attr-defined,assignment]
    warm_up()
    return True
