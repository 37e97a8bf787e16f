"""Runbook "Deployment Procedures → Database Migrations": what `db-migrate` and `db-downgrade`
(flows/migrations.py) decide and how they verify — pure functions, plain data in, a decision out.

* `decide_migrate()` — upgrade one environment to the target revision unless it is applied
  already, the scripts or the database say no (an unknown revision, several script heads, a
  database at a revision the scripts do not know, a branched database), or — production —
  staging is not verified at that revision (or is the same database): staging first;
* `decide_downgrade()` — `downgrade -1` of the database's one head, refused while the live
  deployment needs it (its Railway meta names a migration the database would no longer have),
  the Policy pins it (`pinned_migrations`), it is the first migration, a merge point, unknown
  to the scripts, or not the revision the operator named;
* `verify_migration()` — at the revision, the app's smoke query runs, the API's /health is OK.

The flows' parameter types are here too: a malformed revision fails the run before any check.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from flows.deploy_watch import Environment
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from tasks.migrations import BASE, MigrationState, SmokeResult

Act = Literal["none", "migrate", "downgrade", "refuse"]
ACT_ACTIONS: dict[str, ActionName] = {
    "migrate": ActionName.MIGRATION_UPGRADE,
    "downgrade": ActionName.MIGRATION_DOWNGRADE,
}
OTHER_ACTS = frozenset({"none", "refuse"})
StagingVerdict = Literal["verified", "planned", "not-verified", "n/a"]
_REVISION = re.compile(r"^[A-Za-z0-9_]{1,32}$")


def _revision(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if not _REVISION.fullmatch(value):
            raise ValueError(
                "revision must be 'head' or an Alembic revision id: 1 to 32 letters, digits or"
                " '_' (e.g. 0002_conversation_csat)"
            )
    return value


# the Field gives the UI form its pattern; the validator (it runs first) the one-line message
Revision = Annotated[
    str,
    Field(
        pattern=_REVISION.pattern,
        description="the Alembic revision to migrate to: head (the scripts' newest) or an id",
    ),
    BeforeValidator(_revision),
]
HeadRevision = Annotated[
    str,
    Field(
        pattern=_REVISION.pattern,
        description="the revision you mean to undo (empty: the database's head); refused when"
        " the database's head is another one",
    ),
    BeforeValidator(_revision),
]
VerifyWindowS = Annotated[
    float, Field(ge=5, le=900, description="seconds for the migrated database to verify")
]


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    spec: ActSpec | None = None


def heads_text(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) or BASE


def where_text(environment: str, state: MigrationState) -> str:
    return f"{environment} ({state.database})"


# -- db-migrate --------------------------------------------------------------------------------
class MigrateSignals(BaseModel):
    """What db-migrate saw in one environment (production: and how staging ended)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Environment
    state: MigrationState
    staging: StagingVerdict = "n/a"  # production: the staging run's outcome
    staging_database: str | None = None  # production: host:port/dbname of staging
    staging_applied: tuple[str, ...] = ()  # production: staging's history after its run
    target: str = "app-db"


def _cannot_migrate(s: MigrateSignals) -> str | None:
    """Why the scripts and the database do not allow an upgrade (None: they do)."""
    st, where = s.state, where_text(s.environment, s.state)
    if st.unknown_heads:
        return (
            f"{where} is at {heads_text(st.unknown_heads)}, which the migration scripts do not know"
            " (the scripts are older than the database?): not migrated"
        )
    if st.target is None:
        if st.requested != "head":
            return (
                f"revision {st.requested} is not one of the app's migrations (scripts' head:"
                f" {heads_text(st.script_heads)}): not migrated"
            )
        if not st.script_heads:
            return "the app's Alembic directory has no migrations: nothing to migrate to"
        return (
            f"the migration scripts have {len(st.script_heads)} heads"
            f" ({heads_text(st.script_heads)}): merge them first (alembic merge)"
        )
    if len(st.db_heads) > 1:
        return f"{where} has several heads ({heads_text(st.db_heads)}): migrate it by hand"
    return None


def decide_migrate(s: MigrateSignals, policy: PolicyRules) -> Decision:
    """Upgrade to the target unless it is applied already, the scripts or the database say
    no, or (production) staging is not verified at it — staging first."""
    st, where = s.state, where_text(s.environment, s.state)
    if (why := _cannot_migrate(s)) is not None:
        return Decision(act="refuse", why=why)
    target = str(st.target)
    if not st.to_apply:
        if st.db_heads == (target,):
            return Decision(act="none", why=f"{where} is at {target} already")
        why = f"{where} is at {heads_text(st.db_heads)}, past {target}: nothing to apply"
        return Decision(act="none", why=why)
    if s.environment == "production":
        if s.staging_database == st.database:
            why = (
                f"staging and production are the same database ({st.database}): staging first"
                " would mean nothing; not migrated"
            )
            return Decision(act="refuse", why=why)
        if s.staging != "planned" and (s.staging != "verified" or target not in s.staging_applied):
            why = f"staging is not verified at {target} ({s.staging}): production not migrated"
            return Decision(act="refuse", why=why)
    steps = " → ".join(f"{r} ({st.docs[r]})" if st.docs.get(r) else r for r in st.to_apply)
    why = (
        f"apply {len(st.to_apply)} migration{'s' if len(st.to_apply) > 1 else ''} to {where}"
        f" from {heads_text(st.db_heads)}: {steps}"
    )
    params = {
        "environment": s.environment,
        "database": st.database,
        "revision": target,
        "from": heads_text(st.db_heads),
    }
    return Decision(
        act="migrate",
        why=why,
        spec=spec(policy, ActionName.MIGRATION_UPGRADE, s.target, why, params),
    )


def verify_migration(
    schema_ok: bool, schema: str, smoke: SmokeResult, health_ok: bool, health: str
) -> tuple[bool, str]:
    """The verify verdict of a migration or a downgrade (pure): the database is at the revision,
    the app's smoke query runs on it, and the API's /health is OK."""
    ok = schema_ok and smoke.ok and health_ok
    return ok, f"{schema}; {smoke.detail}; API /health {health}"


# -- db-downgrade ------------------------------------------------------------------------------
class DowngradeSignals(BaseModel):
    """What db-downgrade saw: the database, and what the live app needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Environment
    state: MigrationState
    expected: str | None = None  # the revision the operator means to undo
    live_deployment: str | None = None
    live_migration: str | None = None  # the revision the live deployment's meta names
    pinned: tuple[str, ...] = ()  # Policy `pinned_migrations`
    target: str = "app-db"


def decide_downgrade(s: DowngradeSignals, policy: PolicyRules) -> Decision:
    """`downgrade -1` of the one head, unless the live app needs it (see the module docstring)."""
    st, where = s.state, where_text(s.environment, s.state)
    if st.unknown_heads:
        why = (
            f"{where} is at {heads_text(st.unknown_heads)}, which the migration scripts do not"
            " know: its downgrade is not in them; not downgraded"
        )
        return Decision(act="refuse", why=why)
    if not st.db_heads:
        return Decision(act="refuse", why=f"no migration is applied to {where}: nothing to undo")
    if len(st.db_heads) > 1:
        why = f"{where} has several heads ({heads_text(st.db_heads)}): downgrade it by hand"
        return Decision(act="refuse", why=why)
    head = st.db_heads[0]
    if s.expected and s.expected != head:
        why = f"{where} is at {head}, not {s.expected}: nothing downgraded"
        return Decision(act="refuse", why=why)
    if st.down_to is None:
        why = f"{head} is a merge point of several migrations: downgrade it by hand"
        return Decision(act="refuse", why=why)
    if st.down_to == BASE:
        why = f"{head} is the first migration of {where}: undoing it would leave no history"
        return Decision(act="refuse", why=why)
    remaining = set(st.applied) - {head}
    if s.live_migration and s.live_migration not in remaining:
        why = (
            f"the live deployment {s.live_deployment} needs migration {s.live_migration} (its"
            f" meta names it): downgrading {head} would break it; deploy or roll back the app"
            " first"
        )
        return Decision(act="refuse", why=why)
    if head in s.pinned:
        why = f"the Policy pins migration {head} (pinned_migrations): not downgraded"
        return Decision(act="refuse", why=why)
    doc = f" ({st.docs[head]})" if st.docs.get(head) else ""
    why = f"undo migration {head}{doc} on {where}: downgrade to {st.down_to}"
    params = {
        "environment": s.environment,
        "database": st.database,
        "from_revision": head,
        "to_revision": st.down_to,
    }
    return Decision(
        act="downgrade",
        why=why,
        spec=spec(policy, ActionName.MIGRATION_DOWNGRADE, s.target, why, params),
    )
