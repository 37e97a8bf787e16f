"""Automated remediation of the support platform's operations runbook, on Prefect.

This package is the core every other part shares (docs/architecture.md): the settings read from
`RUNBOOK_*` environment variables, the error tree, the domain types (check results, health
reports, alerts, incidents, actions), the policy rules, the ops database, the ledger, approvals
and safety. It imports nothing of ours above it; its `runbook.cli` subpackage is the console
(the roof) and may import anything.
"""

__version__ = "0.1.0"
