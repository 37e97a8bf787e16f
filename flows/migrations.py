"""Runbook "Deployment Procedures → Database Migrations" (`alembic upgrade head`, staging
first) and the rollback's `alembic downgrade -1`, as two operator flows (`runbook run FLOW
--param k=v`, the UI's Run form):

* `db-migrate`   — upgrade the app's database to a revision (default: the scripts' head).
  **Staging first**: with `environment=production` (the default) the run first migrates and
  verifies staging (a subflow: its Policy — approval unless it auto-approves), and migrates
  production only when staging is verified at the same revision, after approval (destructive:
  a schema change we do not undo ourselves). Verified by the database's Alembic heads, the
  app's smoke query (read-only) and the API's `/health`.
* `db-downgrade` — `alembic downgrade -1` of one environment's database: destructive, after
  approval. Refused (nothing changed) while the live deployment needs the head (its Railway
  meta names it as `migration`, or the Policy's `pinned_migrations` lists it), below the first
  migration, at a merge point, or when the head is not the `revision` the operator named.

Each environment is its own Runbook App Database block document (`migrations_path`: the app
repo's Alembic directory); staging without one is `RUNBOOK_APP_STAGING_DATABASE_URL`, never
production's database. A migration whose verify fails is not undone (a downgrade can lose
data): it pages. Parameters are checked on the signature (a bad one fails the run before any
check, in one line naming it: `operator_flow`); what they decide and how they verify are pure
functions in flows/migrations_plan.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from blocks import AppDatabase, Railway, SupportApi
from flows.acts import Platform, done_text
from flows.deploy_watch import Environment, use_environment
from flows.incident import IncidentRun, RemediationResult, VerifySince
from flows.migrations_plan import (
    DowngradeSignals,
    HeadRevision,
    MigrateSignals,
    Revision,
    StagingVerdict,
    VerifyWindowS,
    decide_downgrade,
    decide_migrate,
    heads_text,
    verify_migration,
)
from flows.notifications import page_failed_run
from flows.scaling import operator_flow, refuse
from runbook.domain import Status
from runbook.plan import ActionName
from tasks import migrations, railway, support_api


# -- the flows ---------------------------------------------------------------------------------
async def use_database(
    run: IncidentRun, environment: Environment
) -> tuple[AppDatabase, SupportApi, Railway, str]:
    """The environment's app database, API and Railway service, and the acts' target; the run
    then acts under that environment's Policy (`use_environment`)."""
    (rw, _), db, api = await asyncio.gather(
        use_environment(run, environment),
        AppDatabase.resolve(environment),
        SupportApi.resolve(environment),
    )
    suffix = "" if environment == "production" else f"@{environment}"
    return db, api, rw, f"app-db{suffix}"


def migration_verifier(
    db: AppDatabase, api: SupportApi, *, revision: str | None = None, heads: tuple[str, ...] = ()
) -> VerifySince:
    """verify(acted_at): `revision` applied (or the heads are exactly `heads`), the smoke query
    runs, /health is OK."""

    async def verify(acted_at: float) -> tuple[bool, str]:
        state, smoke, health = await asyncio.gather(
            migrations.get_migration_state(db, revision or "head"),
            migrations.run_smoke_query(db),
            support_api.get_api_health(api),
        )
        if revision is not None:
            schema_ok = revision in state.applied
            schema = f"{state.database} at {heads_text(state.db_heads)} (wanted {revision})"
        else:
            schema_ok = state.db_heads == heads
            schema = (
                f"{state.database} at {heads_text(state.db_heads)} (wanted {heads_text(heads)})"
            )
        return verify_migration(
            schema_ok, schema, smoke, health.status is Status.OK, health.summary
        )

    return verify


def _staging_verdict(staged: RemediationResult | None) -> StagingVerdict:
    if staged is None:
        return "n/a"
    if staged.verified:
        return "verified"
    return "planned" if staged.dry_run and staged.action_status == "planned" else "not-verified"


@operator_flow(
    name="db-migrate",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def db_migrate(
    revision: Revision = "head",
    environment: Environment = "production",
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: VerifyWindowS = 30.0,
) -> RemediationResult:
    """Deployment Procedures — Database Migrations: `alembic upgrade <revision>` (default head),
    staging first. Production is migrated only after staging is migrated and verified at the
    same revision, and after approval; each is verified by its Alembic heads, the app's smoke
    query and the API's /health. A failed verify pages (a migration is not undone by us).

    Args:
        revision: head (the scripts' newest) or an Alembic revision id
        environment: production (staging first, then production) or staging (staging only)
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        verify_window_s: How long a migrated database may take to verify
    """
    run = await IncidentRun.start("db-migrate", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    staged = None
    if environment == "production":  # the runbook: "staging first!"
        staged = await db_migrate(
            revision,
            "staging",
            incident_id=run.incident_id,
            dry_run=dry_run,
            verify_window_s=verify_window_s,
        )
    db, api, rw, target = await use_database(run, environment)
    state = await migrations.get_migration_state(db, revision)
    signals = MigrateSignals(environment=environment, state=state, target=target)
    if staged is not None:
        staging = await migrations.get_migration_state(
            await AppDatabase.resolve("staging"), state.target or revision
        )
        signals = signals.model_copy(
            update={
                "staging": _staging_verdict(staged),
                "staging_database": staging.database,
                "staging_applied": staging.applied,
            }
        )
    evidence: dict[str, Any] = {
        "environment": environment,
        "database": state.database,
        "database_heads": heads_text(state.db_heads),
        "script_heads": heads_text(state.script_heads),
        "to_apply": list(state.to_apply),
        "staging": signals.staging,
    }
    await run.seen(
        f"{environment} database at {heads_text(state.db_heads)}; scripts at"
        f" {heads_text(state.script_heads)}; {len(state.to_apply)} to apply",
        **evidence,
    )
    decision = decide_migrate(signals, run.policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        return await refuse(run, ActionName.MIGRATION_UPGRADE, target, "refuse", decision.why)
    if decision.spec is None:  # nothing to apply: still say whether it works
        ok, detail = await migration_verifier(db, api, revision=state.target)(0.0)
        return await run.finish(
            "none", decision.why, verified=ok, summary=f"{decision.why}; {detail}"
        )
    change, wanted = decision.spec, str(state.target)

    async def still_pending() -> bool:  # re-checked after the approval
        return wanted not in (await migrations.get_migration_state(db, wanted)).applied

    return await run.execute(
        decision.act,
        change,
        Platform(railway=rw, app_db=db),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=migration_verifier(db, api, revision=wanted),
        still_needed=still_pending,
        window_s=verify_window_s,
        settle_s=0.5,
    )


@operator_flow(
    name="db-downgrade",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def db_downgrade(
    environment: Environment,
    revision: HeadRevision | None = None,
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: VerifyWindowS = 30.0,
) -> RemediationResult:
    """Deployment Procedures — Rollback: `alembic downgrade -1` of one environment's database.
    Destructive: after approval. Refused with nothing changed while the live deployment needs
    the head migration (its meta names it, or the Policy pins it), below the first migration,
    or when the database's head is not `revision`. Verified by the heads, the app's smoke query
    and the API's /health.

    Args:
        environment: production or staging
        revision: The migration you mean to undo (empty: the database's head)
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        verify_window_s: How long the downgraded database may take to verify
    """
    run = await IncidentRun.start("db-downgrade", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    db, api, rw, target = await use_database(run, environment)

    async def observe() -> DowngradeSignals:
        state, listing = await asyncio.gather(
            migrations.get_migration_state(db), railway.get_deployments(rw)
        )
        live = next((d for d in listing.items if d.id == listing.current_id), None)
        return DowngradeSignals(
            environment=environment,
            state=state,
            expected=revision,
            live_deployment=listing.current_id,
            live_migration=live.migration if live else None,
            pinned=tuple(run.policy.pinned_migrations),
            target=target,
        )

    signals = await observe()
    state = signals.state
    evidence: dict[str, Any] = {
        "environment": environment,
        "database": state.database,
        "database_heads": heads_text(state.db_heads),
        "downgrade_to": state.down_to,
        "live_deployment": signals.live_deployment,
        "live_deployment_needs": signals.live_migration,
    }
    await run.seen(
        f"{environment} database at {heads_text(state.db_heads)}; live deployment"
        f" {signals.live_deployment} needs {signals.live_migration or 'no named migration'}",
        **evidence,
    )
    decision = decide_downgrade(signals, run.policy)
    await run.decided(decision.act, decision.why)
    if decision.spec is None:
        return await refuse(run, ActionName.MIGRATION_DOWNGRADE, target, "refuse", decision.why)
    change = decision.spec

    async def still_wanted() -> bool:  # re-checked after the approval: the same, still allowed
        again = decide_downgrade(await observe(), run.policy)
        return again.spec is not None and again.spec.params == change.params

    to = str(change.params["to_revision"])
    return await run.execute(
        decision.act,
        change,
        Platform(railway=rw, app_db=db),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=migration_verifier(db, api, heads=(to,)),
        still_needed=still_wanted,
        window_s=verify_window_s,
        settle_s=0.5,
    )
