"""Flows: one module per runbook section — check → decide → [approve] → act → verify."""

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's flows
