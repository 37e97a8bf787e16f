"""Security incident response against the sandbox: a leaked-key pattern in the access log →
the exact stores in scope, only their keys disabled and only after an approval, Security
paged, customer notifications drafted and not sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flows.security_incident import security_incident
from sandbox.handle import SandboxHandle
from tests.flows.security_support import (
    app_db,
    artifact,
    form_description,
    manual_incident,
    security_env,
)
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
__all__ = ["security_env"]  # the fixture, imported for these tests

AFFECTED = ("store-318", "store-427")
OTHERS = ("store-123", "store-204", "store-555")


def keys_by_store(sb: SandboxHandle) -> dict[str, list[tuple[Any, ...]]]:
    """store → [(key id, prefix, disabled?)] of its keys that were live before the incident."""
    with app_db(sb) as conn:
        rows = conn.execute(
            "SELECT store_id, id, key_prefix, disabled_at IS NOT NULL FROM store_api_keys"
            " WHERE revoked_at IS NULL ORDER BY id"
        ).fetchall()
    found: dict[str, list[tuple[Any, ...]]] = {}
    for store, key_id, prefix, disabled in rows:
        found.setdefault(store, []).append((key_id, prefix, disabled))
    return found


async def test_leaked_key_pattern_disables_only_the_affected_stores_keys_after_approval(
    prefect_server: str, security_env: SandboxHandle, pg_url: str
) -> None:
    sb = security_env
    before = keys_by_store(sb)
    assert not any(d for keys in before.values() for _, _, d in keys), "all live at the start"
    sb.inject("key-leak", target=",".join(AFFECTED))
    emails, pages = len(sb.sink("email")), len(sb.sink("pagerduty"))
    incident = manual_incident()
    running = asyncio.create_task(security_incident(incident_id=incident, window_s=900))

    gate = await waiting_gate(pg_url, incident, running=running)
    form = await form_description(gate)
    for store in AFFECTED:
        assert store in form, form
        for key_id, prefix, _ in before[store]:
            assert prefix in form and f"#{key_id}" in form, (store, prefix, form)
    assert not any(store in form for store in OTHERS), form
    assert keys_by_store(sb) == before, "nothing disabled before the approval"
    paged = [str(p) for p in sb.sink("pagerduty")[pages:]]
    assert any("Security incident" in p for p in paged), "Security hears of it before approving"

    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="contain")
    result = await running

    assert (result.decision, result.action_status, result.verified) == ("contain", "done", True)
    after = keys_by_store(sb)
    for store in AFFECTED:
        assert all(disabled for _, _, disabled in after[store]), store
    for store in OTHERS:
        assert after[store] == before[store], f"{store} untouched"
    scope = await artifact(f"security-scope-{incident}")
    assert all(s in scope for s in AFFECTED) and not any(s in scope for s in OTHERS), scope

    drafts = await artifact(f"security-customer-drafts-{incident}")
    assert "DRAFTS — not sent" in drafts and all(f"## {s}" in drafts for s in AFFECTED)
    new_mail = sb.sink("email")[emails:]
    assert not any("owner@" in to for m in new_mail for to in m["to"]), "no customer was mailed"
    drafted = [m for m in new_mail if m["subject"].startswith("[draft to send:")]
    assert sorted(next(s for s in AFFECTED if s in m["subject"]) for m in drafted) == list(AFFECTED)
    assert all(m["to"] == ["security@example.com"] for m in drafted), drafted
    assert await artifact(f"security-access-log-{incident}")
    checklist = await artifact(f"security-checklist-{incident}")
    assert "rotate-store-key --param store_id=store-318" in checklist
