"""`runbook intake [--host --port]` (placeholder until the intake lands)."""

from __future__ import annotations


def run(host: str, port: int) -> None:
    raise SystemExit("the intake service is not built yet")
