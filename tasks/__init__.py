"""Tasks: one module per external system; each task observes or changes exactly one thing."""

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's tasks
