"""Intake's `RUNBOOK_*` settings: one secret per source, limits, the dispatcher's pace.

They are part of the project's one settings model (`runbook.settings.Settings.intake`); this
module names them for the intake. A source whose secret is not set rejects every delivery with
401 (fail closed).
"""

from __future__ import annotations

from runbook.settings import IntakeSettings

__all__ = ["IntakeSettings"]
