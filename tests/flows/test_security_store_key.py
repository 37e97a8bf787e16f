"""Rotate a store's API key against the sandbox's support API and app database, with a real
Prefect server: the store's client sees its keys accepted and refused."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from flows.rotate_store_key import rotate_store_key
from sandbox.handle import SandboxHandle
from tests.flows.security_support import (
    app_db,
    client_key,
    delivered_key,
    everywhere,
    form_description,
    mails_to,
    manual_incident,
    security_env,
    store_status,
)
from tests.runbook.test_safety_core import code_from_slack, resume, waiting_gate

pytestmark = pytest.mark.integration
__all__ = ["security_env"]  # the fixture, imported for these tests


async def test_new_store_key_works_old_key_works_through_the_grace_and_is_refused_after_approval(
    prefect_server: str, security_env: SandboxHandle, pg_url: str
) -> None:
    sb = security_env
    store = "store-204"
    old = client_key(sb, store)
    assert store_status(sb, old) == 200
    mails = len(mails_to(sb, f"owner@{store}.example.com"))
    incident = manual_incident()
    running = asyncio.create_task(rotate_store_key(store_id=store, incident_id=incident))

    new = await delivered_key(sb, store, mails)  # delivered, then the 2 s grace starts
    assert (store_status(sb, new), store_status(sb, old)) == (200, 200), "both during the grace"
    gate = await waiting_gate(pg_url, incident)
    form = await form_description(gate)
    assert f"`revoke_api_key` on `store:{store}`" in form and old[:16] in form
    assert store_status(sb, old) == 200, "still valid while the revocation waits for a human"

    code = code_from_slack(sb, "alice", gate)
    await resume(gate, approve=True, approver="alice", code=code, reason="rotation")
    result = await running
    assert (result.action_status, result.verified) == ("done", True), result
    assert (store_status(sb, new), store_status(sb, old)) == (200, 401)
    assert len(mails_to(sb, f"owner@{store}.example.com")) == mails + 1, "delivered once"
    with app_db(sb) as conn:
        hashed, plain = conn.execute(
            "SELECT count(*) FILTER (WHERE key_hash = %s),"
            " count(*) FILTER (WHERE key_hash = %s OR key_prefix = %s) FROM store_api_keys",
            (hashlib.sha256(new.encode()).hexdigest(), new, new),
        ).fetchone() or (0, 0)
    assert (hashed, plain) == (1, 0), "the app database holds the hash, never the key"
    told = json.dumps([sb.sink("slack"), sb.sink("pagerduty")])
    assert new not in told and new[:16] in told, "Slack names the prefix, never the key"
    places = await everywhere(sb, pg_url, console="")
    owner = f"owner@{store}.example.com"
    places["email"] = json.dumps([m for m in sb.sink("email") if owner not in m["to"]])
    leaked = [where for where, text in places.items() if new in text]
    assert leaked == [], f"the new key reached {leaked}; only the store's contact may see it"


async def test_rejected_revocation_leaves_both_keys_valid_and_escalates(
    prefect_server: str, security_env: SandboxHandle, pg_url: str
) -> None:
    sb = security_env
    store = "store-555"
    old = client_key(sb, store)
    mails = len(mails_to(sb, f"owner@{store}.example.com"))
    pages = len(sb.sink("pagerduty"))
    incident = manual_incident()
    running = asyncio.create_task(rotate_store_key(store_id=store, incident_id=incident))
    gate = await waiting_gate(pg_url, incident, running=running)
    new = await delivered_key(sb, store, mails)
    await resume(gate, approve=False, approver="bob", code="", reason="store not switched yet")
    result = await running
    assert result.action_status == "rejected", result
    assert "both stay valid" in result.summary
    assert (store_status(sb, new), store_status(sb, old)) == (200, 200)
    escalated = [p for p in sb.sink("pagerduty")[pages:] if store in json.dumps(p)]
    assert escalated, "a human is paged about the rejected revocation"


@pytest.mark.parametrize(
    ("store_id", "named"),
    [
        ("store-999", "store_id='store-999' (no such store"),
        ("store 1; --", "store_id='store 1; --'"),
    ],
    ids=["unknown-store", "malformed-id"],
)
async def test_a_bad_store_id_fails_in_one_line_and_creates_nothing(
    prefect_server: str, security_env: SandboxHandle, store_id: str, named: str
) -> None:
    sb = security_env
    with app_db(sb) as conn:
        before = conn.execute("SELECT count(*) FROM store_api_keys").fetchone()
    mails = len(sb.sink("email"))
    state = await rotate_store_key(store_id=store_id, return_state=True)
    assert state.is_failed(), state
    message = state.message or ""
    assert named in message and "\n" not in message, message
    with app_db(sb) as conn:
        assert conn.execute("SELECT count(*) FROM store_api_keys").fetchone() == before
    assert len(sb.sink("email")) == mails, "nothing sent"
