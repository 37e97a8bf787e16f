"""Imported once by the warm-start fork server (flows/warm_start.py), so every forked flow run
starts with it done: what each run would otherwise import or build on its own first use.

- `prefect.task_engine`: imported lazily by the first task call of every run (~40 ms);
- anyio's asyncio backend: imported lazily on the first `anyio` call of every run;
- rich's emoji table: imported lazily by the first console log line — from two threads at once
  in a fresh run, which has failed with "partially initialized module 'rich._emoji_codes'";
- the process's shared TLS context (runbook/tls.py): ~20 ms to build;
- Prefect's settings (~40 ms to build from the environment and the config files): a run whose
  `PREFECT_*` environment is the fork server's takes this object (`settings_for_this_run`)
  instead of building its own.
"""

from __future__ import annotations

import os

import anyio._backends._asyncio  # noqa: F401
import prefect.task_engine  # noqa: F401
import rich._emoji_codes  # noqa: F401
from prefect.settings.models.root import Settings

from runbook.tls import tls_context

tls_context()


def _prefect_environment() -> dict[str, str]:
    """What Prefect's settings are read from in the environment (`PREFECT__*` are the engine's
    per-run variables, not settings)."""
    return {k: v for k, v in os.environ.items() if k.startswith("PREFECT_") and k[8:9] != "_"}


_BUILT = (_prefect_environment(), Settings())


def settings_for_this_run() -> Settings:
    """The fork server's settings when this run's environment would build the same, else new."""
    environment, settings = _BUILT
    return settings if _prefect_environment() == environment else Settings()
