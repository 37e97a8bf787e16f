"""Flows: one module per runbook section — check → decide → [approve] → act → verify."""

from flows import run_logs as _run_logs

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's flows

_run_logs.install()  # a run suspended for an approval logs INFO, not ERROR (flows/run_logs.py)
