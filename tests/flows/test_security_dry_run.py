"""A dry run of each Security Procedures flow decides and plans, and changes and sends nothing:
no key created, revoked or disabled, no platform mutation, no mail."""

from __future__ import annotations

import pytest

from flows.rotate_openai_key import rotate_openai_key
from flows.rotate_store_key import rotate_store_key
from flows.security_incident import security_incident
from sandbox.handle import SandboxHandle
from tests.flows.security_support import app_db, security_env

pytestmark = pytest.mark.integration
__all__ = ["security_env"]  # the fixture, imported for these tests


async def test_dry_runs_of_the_security_flows_plan_and_change_nothing(
    prefect_server: str, security_env: SandboxHandle
) -> None:
    sb = security_env

    def keys() -> list[tuple[object, ...]]:
        with app_db(sb) as conn:
            return conn.execute(
                "SELECT id, revoked_at, disabled_at FROM store_api_keys ORDER BY id"
            ).fetchall()

    before, journal, mails = keys(), len(sb.journal()), len(sb.sink("email"))
    results = [
        await rotate_store_key(store_id="store-123", dry_run=True),
        await rotate_openai_key(dry_run=True),
        await security_incident(stores=["store-123"], dry_run=True),
    ]
    for result in results:
        assert result.dry_run and result.action_status == "planned", result
    assert results[2].decision == "contain" and "store-123" in results[2].summary
    assert keys() == before, "no key created, revoked or disabled"
    assert len(sb.journal()) == journal, "the sandbox saw no mutation"
    assert len(sb.sink("email")) == mails, "nothing mailed"
