"""Flows: one module per runbook section — check → decide → [approve] → act → verify."""
