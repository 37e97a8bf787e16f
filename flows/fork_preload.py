"""Imported once by the warm-start fork server (flows/warm_start.py), so every forked flow run
starts with it done: what each run would otherwise import or build on its own first use.

- `prefect.task_engine`: imported lazily by the first task call of every run (~40 ms);
- anyio's asyncio backend: imported lazily on the first `anyio` call of every run;
- rich's emoji table: imported lazily by the first console log line — from two threads at once
  in a fresh run, which has failed with "partially initialized module 'rich._emoji_codes'";
- the process's shared TLS context (runbook/tls.py): ~20 ms to build.
"""

from __future__ import annotations

import anyio._backends._asyncio  # noqa: F401
import prefect.task_engine  # noqa: F401
import rich._emoji_codes  # noqa: F401

from runbook.tls import tls_context

tls_context()
