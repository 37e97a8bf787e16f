"""Database migrations against the sandbox's real databases (production and staging, both
stamped at the app's baseline migration) and a real Prefect server, flows called directly:
approvals are answered through the resume API with the one-time code from the Slack sink.
What is checked is what an operator would see: the schema of each database, its Alembic
version, the ledger, and what Railway saw."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from alembic import command

from blocks import Railway
from blocks.policy import Policy
from flows.migrations import db_downgrade, db_migrate
from runbook import opsdb
from runbook.settings import get_settings
from sandbox import app_migrations
from sandbox.app_migrations import BASELINE, HEAD
from sandbox.handle import SandboxHandle
from tasks import railway
from tests.flows.test_deployment import approve, gate_for, within

pytestmark = pytest.mark.integration
PRODUCTION, STAGING = "RUNBOOK_APP_DATABASE_URL", "RUNBOOK_APP_STAGING_DATABASE_URL"


def incident() -> str:
    return f"mig-{uuid.uuid4().hex[:8]}"


def sha(marker: str = "") -> str:
    return (marker + secrets.token_hex(6))[:12]


def ops(sb: SandboxHandle, since: int) -> list[str]:
    return [e["operation"] for e in sb.journal()[since:]]


async def version(sb: SandboxHandle, which: str) -> list[str]:
    """The database's Alembic version, as `alembic current` shows it."""
    async with await psycopg.AsyncConnection.connect(sb.env[which]) as conn:
        cur = await conn.execute("SELECT version_num FROM alembic_version ORDER BY 1")
        return [row[0] for row in await cur.fetchall()]


async def has_csat_column(sb: SandboxHandle, which: str) -> bool:
    """The column the pending migration adds (`0002_conversation_csat`)."""
    async with await psycopg.AsyncConnection.connect(sb.env[which]) as conn:
        cur = await conn.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'conversations' AND column_name = 'csat_score'"
        )
        return await cur.fetchone() is not None


async def put_at(sb: SandboxHandle, which: str, revision: str) -> None:
    """Bring a database to `revision` the way a developer would (the app's Alembic project)."""

    def move() -> None:
        cfg = app_migrations.config(sb.env[which])
        if revision == BASELINE:
            command.downgrade(cfg, BASELINE)
        else:
            command.upgrade(cfg, revision)

    if await version(sb, which) != [revision]:
        await asyncio.to_thread(move)


async def ledger(pg_url: str, incident_id: str) -> list[tuple[str, str, list[str]]]:
    async with await opsdb.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT target, status, approvers FROM runbook.actions WHERE incident_id = %s"
            " AND action LIKE 'migration_%%' ORDER BY created_at",
            (incident_id,),
        )
        return [(t, s, list(a or [])) for t, s, a in await cur.fetchall()]


async def go_live(sb: SandboxHandle, commit: str) -> str:
    """Deploy a commit outside our flows (a push to main) and wait until it is live."""
    applied = await railway.deploy_commit.fn(await Railway.resolve(), commit)
    new_id = str(applied.new_deployment_id)
    deadline = time.monotonic() + 15
    while sb.state()["deployment"]["id"] != new_id and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert sb.state()["deployment"]["id"] == new_id, "the deploy went live"
    return new_id


async def live_needs_no_migration(sb: SandboxHandle) -> None:
    listing = await railway.get_deployments.fn(await Railway.resolve())
    live = next(d for d in listing.items if d.id == listing.current_id)
    if live.migration is not None:  # an earlier test left an `a1e…` deployment live
        await go_live(sb, sha("c0de"))


@pytest.fixture
async def sb(prefect_server: str, platform_env: SandboxHandle) -> AsyncIterator[SandboxHandle]:
    """Both databases at the baseline before and after each test (other tests share them)."""
    for which in (PRODUCTION, STAGING):
        await put_at(platform_env, which, BASELINE)
    yield platform_env
    for which in (PRODUCTION, STAGING):
        await put_at(platform_env, which, BASELINE)


async def test_a_migration_reaches_production_only_after_staging_and_an_approval(
    sb: SandboxHandle, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging's Policy document auto-approves (and the acting process allows it for staging
    only); production's document says auto-approve too — someone with Prefect API access edited
    it — yet a human is asked, after staging was migrated and verified."""
    monkeypatch.setenv("RUNBOOK_ALLOW_AUTO_APPROVE", "1")
    monkeypatch.setenv("RUNBOOK_AUTO_APPROVE_ENVIRONMENTS", "staging")
    get_settings.cache_clear()
    await Policy(auto_approve=True).asave("staging", overwrite=True)
    await Policy(auto_approve=True).asave(get_settings().environment, overwrite=True)
    try:
        inc, start = incident(), len(sb.journal())
        running = asyncio.create_task(db_migrate(incident_id=inc, verify_window_s=10))
        await gate_for(pg_url, inc)
        assert await has_csat_column(sb, STAGING) and await version(sb, STAGING) == [HEAD]
        assert not await has_csat_column(sb, PRODUCTION), "production waits for a human"
        assert await version(sb, PRODUCTION) == [BASELINE]
        await approve(pg_url, sb, inc)
        result = await within(running)
    finally:
        await Policy.adelete("staging")
        await Policy.adelete(get_settings().environment)
    assert (result.action_status, result.verified) == ("done", True), result
    assert result.approvers == ["alice"]
    assert await has_csat_column(sb, PRODUCTION) and await version(sb, PRODUCTION) == [HEAD]
    assert f"production database migrated to {HEAD}" in result.summary
    assert "smoke query ok" in result.summary
    assert await ledger(pg_url, inc) == [
        ("app-db@staging", "done", []),
        ("app-db", "done", ["alice"]),
    ]
    assert ops(sb, start) == [], "a migration changes nothing on Railway"


async def test_a_downgrade_waits_for_an_approval_then_undoes_the_head_migration(
    sb: SandboxHandle, pg_url: str
) -> None:
    await put_at(sb, PRODUCTION, HEAD)
    await live_needs_no_migration(sb)
    inc, start = incident(), len(sb.journal())
    running = asyncio.create_task(db_downgrade("production", incident_id=inc, verify_window_s=10))
    await gate_for(pg_url, inc)
    await asyncio.sleep(0.5)
    assert await version(sb, PRODUCTION) == [HEAD], "nothing is undone before the approval"
    await approve(pg_url, sb, inc)
    result = await within(running)
    assert (result.action_status, result.verified) == ("done", True), result
    assert result.approvers == ["alice"]
    assert await version(sb, PRODUCTION) == [BASELINE]
    assert not await has_csat_column(sb, PRODUCTION)
    assert await version(sb, STAGING) == [BASELINE], "the other environment is untouched"
    assert await ledger(pg_url, inc) == [("app-db", "done", ["alice"])]
    assert ops(sb, start) == []


async def test_a_downgrade_is_refused_while_the_live_deployment_needs_the_head_migration(
    sb: SandboxHandle, pg_url: str
) -> None:
    await put_at(sb, PRODUCTION, HEAD)
    live = await go_live(sb, sha("a1e"))  # its meta names HEAD as `migration`
    inc, start = incident(), len(sb.journal())
    result = await within(db_downgrade("production", incident_id=inc))
    assert result.action_status == "refused", result
    assert f"the live deployment {live} needs migration {HEAD}" in result.why
    assert result.approvers == [], "nobody was asked"
    assert await version(sb, PRODUCTION) == [HEAD] and await has_csat_column(sb, PRODUCTION)
    assert await ledger(pg_url, inc) == [] and ops(sb, start) == []


async def test_a_dry_run_of_each_flow_changes_no_database(sb: SandboxHandle, pg_url: str) -> None:
    await live_needs_no_migration(sb)
    await put_at(sb, STAGING, HEAD)  # staging has a migration to undo; production one to apply
    start = len(sb.journal())
    before = {w: await version(sb, w) for w in (PRODUCTION, STAGING)}
    migrate, down = incident(), incident()
    planned = await within(db_migrate(incident_id=migrate, dry_run=True))
    assert (planned.action_status, planned.dry_run) == ("planned", True), planned
    undo = await within(db_downgrade("staging", incident_id=down, dry_run=True))
    assert (undo.action_status, undo.dry_run) == ("planned", True), undo
    assert {w: await version(sb, w) for w in (PRODUCTION, STAGING)} == before
    assert not await has_csat_column(sb, PRODUCTION) and await has_csat_column(sb, STAGING)
    assert await ledger(pg_url, migrate) == [] and await ledger(pg_url, down) == []
    assert await ledger(pg_url, f"dry-run:{migrate}") == [("app-db", "planned", [])]
    assert await ledger(pg_url, f"dry-run:{down}") == [("app-db@staging", "planned", [])]
    assert ops(sb, start) == [], "a dry run changes nothing on the platform"


BAD_PARAMETERS = [
    (db_migrate, {"environment": "prod"}, "environment", "'production' or 'staging'"),
    (db_migrate, {"revision": "head; DROP TABLE conversations"}, "revision", "revision id"),
    (db_migrate, {"revision": "-1"}, "revision", "1 to 32 letters, digits or '_'"),
    (db_migrate, {"verify_window_s": 1}, "verify_window_s", "greater than or equal to 5"),
    (db_downgrade, {"environment": "qa"}, "environment", "'production' or 'staging'"),
    (db_downgrade, {"environment": "staging", "revision": "../x"}, "revision", "revision id"),
]


@pytest.mark.parametrize(
    ("flow_fn", "params", "name", "allowed"),
    BAD_PARAMETERS,
    ids=[f"{f.name}-{n}-{i}" for i, (f, _, n, _) in enumerate(BAD_PARAMETERS)],
)
async def test_a_bad_parameter_fails_the_run_before_any_check(
    sb: SandboxHandle, flow_fn: Any, params: dict[str, Any], name: str, allowed: str
) -> None:
    state = await flow_fn(**params, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "\n" not in message, "one line"
    assert f"{flow_fn.name}: bad parameter {name}=" in message and allowed in message, message
    assert await version(sb, PRODUCTION) == [BASELINE] == await version(sb, STAGING)
