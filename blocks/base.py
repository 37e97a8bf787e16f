"""The shared base of our blocks: load by environment name, else build from `RUNBOOK_*`."""

from __future__ import annotations

from typing import Any, Self

from prefect.blocks.core import Block
from prefect.settings import PREFECT_API_URL

from runbook import redact
from runbook.settings import Settings, get_settings


class RunbookBlock(Block):
    """A block that can also be built from the process's `RUNBOOK_*` settings."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    async def resolve(cls, name: str | None = None) -> Self:
        """The saved block document `name` (default: the environment), else one from settings.

        Without a configured Prefect API we never try to load (that would start a temporary
        server just to find nothing).
        """
        settings = get_settings()
        redact.install()
        block: Self | None = None
        if PREFECT_API_URL.value():
            try:
                loaded: Any = await cls.aload(name or settings.environment)
            except ValueError:
                pass
            else:
                block = loaded
        if block is None:
            block = cls.from_settings_for(name, settings)
        redact.register_model(block)
        return block

    @classmethod
    def from_settings_for(cls, name: str | None, settings: Settings) -> Self:
        """The block of environment `name` when it has no document: by default the process's
        own settings (a block whose environments must differ, e.g. the app database of staging,
        says so here)."""
        return cls.from_settings(settings)
