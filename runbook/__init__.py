"""Automated remediation of the support platform's operations runbook, on Prefect.

This package holds what every other part shares: the `runbook` CLI, the settings read from
`RUNBOOK_*` environment variables, the error tree and the few domain types (check results,
health reports, alerts, incidents, actions).
"""

__version__ = "0.1.0"
