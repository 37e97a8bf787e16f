"""`python -m runbook.cli …` is the `runbook` command."""

from runbook.cli import main

main()
