"""Imported once by the warm-start fork server (flows/warm_start.py), so every forked flow run
starts with it done: what each run would otherwise import or build on its own first use.

- `prefect.task_engine`: imported lazily by the first task call of every run (~40 ms);
- anyio's asyncio backend: imported lazily on the first `anyio` call of every run;
- rich's emoji table: imported lazily by the first console log line — from two threads at once
  in a fresh run, which has failed with "partially initialized module 'rich._emoji_codes'";
- the process's shared TLS context (runbook/tls.py): ~20 ms to build;
- Prefect's settings (~40 ms to build from the environment and the config files): a run whose
  `PREFECT_*` environment is the fork server's takes this object (`settings_for_this_run`)
  instead of building its own, and skips rebuilding it a second time from the serialized
  context the runner sends (`without_same_settings`, ~30 ms);
- `prefect.utilities.visualization` (and graphviz): imported by the first task call of every run
  (~50 ms in a profiled rerun);
- the TLS context of Prefect's API clients: each client Prefect's engine makes (three per run)
  parsed the CA bundle again (~20 ms each); `shared_prefect_client_tls` lets them share one.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from functools import cache
from typing import Any

import anyio._backends._asyncio  # noqa: F401
import certifi
import prefect.client.orchestration
import prefect.task_engine
import prefect.utilities.visualization
import rich._emoji_codes  # noqa: F401
from prefect.context import SettingsContext, get_settings_context
from prefect.settings.models.root import Settings

from runbook.tls import tls_context

tls_context()


@cache
def _verifying_context_of(cafile: str, version: tuple[int, int]) -> ssl.SSLContext:
    del version  # the cache key: a CA file rewritten in place is read again
    return ssl.create_default_context(cafile=cafile)


def _verifying_context(cafile: str) -> ssl.SSLContext:
    stat = os.stat(cafile)  # a missing file raises here as it would in ssl
    return _verifying_context_of(cafile, (stat.st_mtime_ns, stat.st_size))


class _SharedVerifyingContexts:
    """Stands in for the `ssl` module inside `prefect.client.orchestration`: the verifying
    context Prefect builds for every API client (`create_default_context(cafile=...)`, the CA
    bundle parsed again each time) is built once per CA file and shared, as runbook/tls.py does
    for our own clients. A context is safe to share between clients: the clients Prefect's
    engine makes all have the settings' HTTP/2 setting, so httpcore sets the same ALPN list on
    it before each connection (no client here passes `httpx_settings`, e.g. a client certificate,
    that would change a shared context). Every other call — the unverified context of
    `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`, which Prefect then modifies — goes to the real
    module. A CA file rewritten on disk (another modification time or size) is read again."""

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        if purpose is ssl.Purpose.SERVER_AUTH and cafile and capath is None and cadata is None:
            return _verifying_context(cafile)
        return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


def shared_prefect_client_tls() -> None:
    """Point Prefect's API clients (in this process and every run forked from it) at shared
    verifying contexts, the default one built now."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    prefect.client.orchestration.ssl = _SharedVerifyingContexts()  # type: ignore[attr-defined,assignment]
    _verifying_context(PREFECT_API_SSL_CERT_FILE.value() or certifi.where())  # as Prefect picks


shared_prefect_client_tls()


def _prefect_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What Prefect's settings are read from in an environment (`PREFECT__*` are the engine's
    per-run variables, not settings)."""
    return {k: v for k, v in environ.items() if k.startswith("PREFECT_") and k[8:9] != "_"}


def _as_the_runner_sends_it(settings: Settings) -> dict[str, str]:
    """The `PREFECT_*` environment a run forked by `runbook serve` gets when the runner's settings
    are these: the runner exports every setting that is set (from the environment *or* the
    active profile, e.g. the default profile's `PREFECT_SERVER_EPHEMERAL_ENABLED`) under its
    own environment (`run_flow_in_forkserver`'s `merged_env`)."""
    return _prefect_environment(settings.to_environment_variables(exclude_unset=True) | os.environ)


def _config_files(settings: Settings) -> tuple[tuple[str, int, int] | None, ...]:
    """The files Prefect reads settings from besides the environment — the profiles file and,
    in the working directory, `.env`, `prefect.toml`, `pyproject.toml` — as (path, modification
    time, size): a change to any of them makes a run build its settings again, as before."""
    state: list[tuple[str, int, int] | None] = []
    for path in (settings.profiles_path, ".env", "prefect.toml", "pyproject.toml"):
        try:
            stat = os.stat(path)
        except OSError:
            state.append(None)
        else:
            state.append((os.path.abspath(path), stat.st_mtime_ns, stat.st_size))
    return tuple(state)


_SETTINGS = Settings()
_SAME_ENVIRONMENTS = (_prefect_environment(), _as_the_runner_sends_it(_SETTINGS))
_SAME_FILES = _config_files(_SETTINGS)
# what the runner's serialized context holds when its settings are these (compared, not rebuilt)
_SERIALIZED = SettingsContext(
    profile=get_settings_context().profile, settings=_SETTINGS
).serialize()


def settings_for_this_run() -> Settings:
    """The fork server's settings when this run's environment and Prefect's config files would
    build the same, else new ones."""
    if _prefect_environment() in _SAME_ENVIRONMENTS and _config_files(_SETTINGS) == _SAME_FILES:
        return _SETTINGS
    return Settings()


def without_same_settings(
    context: dict[str, Any] | None, settings: Settings
) -> dict[str, Any] | None:
    """The runner's serialized context for the run, without its settings when they are exactly
    the fork server's and this run uses those (`settings`, from `settings_for_this_run`):
    Prefect's engine would otherwise build a second Settings object from them (~30 ms) equal to
    the one already current."""
    if context and settings is _SETTINGS and context.get("settings_context") == _SERIALIZED:
        return {**context, "settings_context": {}}
    return context
