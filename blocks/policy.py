"""The Runbook Policy block: the core's policy rules (runbook/policy.py), saved per environment.

An environment's policy is a saved block document of the same name. Defaults are the runbook's
own numbers where it gives them (docs/policy.md). The acting process's environment is a floor
the document can only tighten; a document that fails the bounds is refused (`resolve`).
"""

from __future__ import annotations

from typing import Self

from prefect.logging import get_logger
from pydantic import ValidationError

from blocks.base import RunbookBlock
from runbook import redact
from runbook.policy import Floor, PolicyRules, Threshold, one_problem
from runbook.settings import Settings, get_settings

__all__ = ["Floor", "Policy", "Threshold"]

log = get_logger("runbook.policy")


class Policy(RunbookBlock, PolicyRules):
    """Thresholds, caps, budgets and approval rules for one environment.

    The acting process's environment (`RUNBOOK_APPROVERS`, `RUNBOOK_REQUIRE_CODE`,
    `RUNBOOK_ALLOW_AUTO_APPROVE`, caps and budgets) is a floor: this block can only tighten it."""

    _block_type_name = "Runbook Policy"
    _block_type_slug = "runbook-policy"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The policy of an environment without a block document: defaults + the floor.

        Built without validation on purpose: the environment is the trust root (the tests and
        the demo use approval timeouts of a few seconds)."""
        floor = Floor.from_settings(settings)
        extra: dict[str, object] = {
            "auto_approve": floor.auto_approve,
            "max_replicas": floor.max_replicas,
            "max_pool_size": floor.max_pool_size,
            "destructive_budget_per_hour": floor.destructive_budget_per_hour,
            "mutation_budget_per_hour": floor.mutation_budget_per_hour,
            "approval_valid_s": floor.approval_valid_s,
            "approval_timeout_s": floor.approval_timeout_s,
        }
        if settings.scale_down_cooldown_s is not None:
            extra["scale_down_cooldown_s"] = settings.scale_down_cooldown_s
        if settings.model_switch_min_interval_s is not None:
            extra["model_switch_min_interval_s"] = settings.model_switch_min_interval_s
        if settings.store_key_grace_s is not None:
            extra["store_key_grace_s"] = settings.store_key_grace_s
        return cls().model_copy(update=extra).with_floor(floor)

    @classmethod
    async def resolve(cls, name: str | None = None) -> Self:
        """The environment's block document, tightened by the floor. A document that does not
        validate (a number out of bounds, …) is refused: the floor is used, `problems` says why
        (the incident flows page it)."""
        settings = get_settings()
        redact.install()
        floor = Floor.from_settings(settings)
        problems: list[str] = []
        block: Self | None = None
        try:
            block = await cls._load_document(name or settings.environment)
        except ValidationError as exc:
            problems = [one_problem(e) for e in exc.errors()]
            log.error("Policy block refused, using the floor: %s", "; ".join(problems))
        policy = cls.from_settings(settings) if block is None else block.with_floor(floor)
        env_name = name or settings.environment
        only = [e.strip() for e in settings.auto_approve_environments.split(",") if e.strip()]
        if policy.auto_approve and only and env_name not in only:
            # one process may act on several environments (db-migrate: staging, then
            # production): auto-approve only where the environment says so
            log.warning(
                "Policy: auto_approve ignored for %r (RUNBOOK_AUTO_APPROVE_ENVIRONMENTS)", env_name
            )
            policy = policy.model_copy(update={"auto_approve": False})
        policy._problems = problems + policy._problems
        redact.register_model(policy)
        return policy

    @classmethod
    async def _load_document(cls, name: str) -> Self | None:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        try:
            loaded = await cls.aload(name)
        except ValidationError:
            raise
        except RuntimeError as exc:  # Prefect wraps a document that fails validation
            if isinstance(exc.__cause__, ValidationError):
                raise exc.__cause__ from None
            raise
        except ValueError:  # no document of that name
            return None
        assert isinstance(loaded, cls)
        return loaded
