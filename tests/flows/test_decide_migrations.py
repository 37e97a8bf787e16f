"""db-migrate and db-downgrade decisions as tables: plain data in, a decision out (no Prefect,
no database). What an operator would notice: what is migrated, what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest

from flows import migrations_plan as mg
from runbook.actions import ActionClass
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tasks.migrations import MigrationState, SmokeResult

pytestmark = pytest.mark.unit
POLICY = PolicyRules()
B, C, D = "0001_baseline", "0002_conversation_csat", "0003_more"
PROD, STAGE = "10.0.0.1:5432/app", "10.0.0.2:5432/app_staging"


def state(**overrides: Any) -> MigrationState:
    """A database at the baseline, the scripts one migration ahead."""
    fields: dict[str, Any] = {
        "database": PROD,
        "script_heads": (C,),
        "db_heads": (B,),
        "applied": (B,),
        "target": C,
        "to_apply": (C,),
        "down_to": "base",
        "docs": {C: "conversations.csat_score"},
    }
    return MigrationState(**{**fields, **overrides})


def migrate(environment: str = "staging", **signals: Any) -> mg.Decision:
    s = signals.pop("state", state())
    return mg.decide_migrate(mg.MigrateSignals(environment=environment, state=s, **signals), POLICY)


def production(**signals: Any) -> mg.Decision:
    base = {"staging": "verified", "staging_database": STAGE, "staging_applied": (B, C)}
    return migrate("production", **{**base, **signals})


def test_a_pending_migration_is_applied_to_staging_as_a_destructive_act() -> None:
    d = migrate(target="app-db@staging")
    assert d.act == "migrate" and d.spec is not None
    assert d.spec.action is ActionName.MIGRATION_UPGRADE
    assert d.spec.target == "app-db@staging"
    assert d.spec.params == {"environment": "staging", "database": PROD, "revision": C, "from": B}
    assert d.spec.action_class is ActionClass.DESTRUCTIVE, "approval unless staging auto-approves"
    assert not d.spec.reversible, "a migration is not undone by us"
    assert f"{C} (conversations.csat_score)" in d.why


def test_production_is_migrated_once_staging_is_verified_at_the_same_revision() -> None:
    d = production()
    assert d.act == "migrate" and d.spec is not None and d.spec.params["revision"] == C


@pytest.mark.parametrize(
    ("signals", "why"),
    [
        ({"staging": "not-verified"}, f"staging is not verified at {C} (not-verified)"),
        ({"staging_applied": (B,)}, f"staging is not verified at {C} (verified)"),
        ({"staging_database": PROD}, "staging and production are the same database"),
    ],
    ids=["staging-failed", "staging-elsewhere", "same-database"],
)
def test_production_is_refused_unless_staging_went_first(signals: dict[str, Any], why: str) -> None:
    d = production(**signals)
    assert d.act == "refuse" and d.spec is None
    assert why in d.why


def test_a_dry_run_plans_production_after_a_planned_staging() -> None:
    assert production(staging="planned", staging_applied=(B,)).act == "migrate"


@pytest.mark.parametrize(
    ("st", "act", "why"),
    [
        (state(db_heads=(C,), applied=(B, C), to_apply=()), "none", f"is at {C} already"),
        (
            state(db_heads=(D,), applied=(B, C, D), to_apply=(), script_heads=(D,)),
            "none",
            f"is at {D}, past {C}: nothing to apply",
        ),
        (
            state(requested="0009_nope", target=None, to_apply=()),
            "refuse",
            "revision 0009_nope is not one of the app's migrations",
        ),
        (
            state(script_heads=(C, D), target=None, to_apply=()),
            "refuse",
            "the migration scripts have 2 heads",
        ),
        (
            state(db_heads=("ffff_newer",), unknown_heads=("ffff_newer",), applied=()),
            "refuse",
            "which the migration scripts do not know",
        ),
        (state(db_heads=(B, D)), "refuse", "has several heads"),
    ],
    ids=[
        "at-target",
        "past-target",
        "unknown-revision",
        "two-script-heads",
        "db-ahead",
        "branched",
    ],
)
def test_migrate_decisions(st: MigrationState, act: str, why: str) -> None:
    d = migrate(state=st)
    assert d.act == act and why in d.why, d
    assert (d.spec is None) is (act != "migrate")


def downgrade(**signals: Any) -> mg.Decision:
    s = signals.pop("state", state(db_heads=(C,), applied=(C, B), down_to=B, to_apply=()))
    env = signals.pop("environment", "production")
    return mg.decide_downgrade(mg.DowngradeSignals(environment=env, state=s, **signals), POLICY)


def test_a_downgrade_undoes_exactly_the_head_and_needs_approval() -> None:
    d = downgrade(live_deployment="dep-1", live_migration=B)
    assert d.act == "downgrade" and d.spec is not None
    assert d.spec.action is ActionName.MIGRATION_DOWNGRADE
    assert d.spec.params == {
        "environment": "production",
        "database": PROD,
        "from_revision": C,
        "to_revision": B,
    }
    assert d.spec.action_class is ActionClass.DESTRUCTIVE


@pytest.mark.parametrize(
    ("signals", "why"),
    [
        (
            {"live_deployment": "dep-9", "live_migration": C},
            f"the live deployment dep-9 needs migration {C}",
        ),
        ({"live_deployment": "dep-9", "live_migration": D}, "needs migration 0003_more"),
        ({"pinned": (C,)}, f"the Policy pins migration {C}"),
        ({"expected": B}, f"is at {C}, not {B}: nothing downgraded"),
        ({"state": state(db_heads=(B,), applied=(B,), down_to="base")}, "is the first migration"),
        ({"state": state(db_heads=(), applied=(), down_to=None)}, "no migration is applied"),
        ({"state": state(db_heads=(C,), applied=(C, B), down_to=None)}, "merge point"),
        (
            {"state": state(db_heads=("ffff",), unknown_heads=("ffff",), applied=(), down_to=None)},
            "its downgrade is not in them",
        ),
    ],
    ids=[
        "live-needs-head",
        "live-needs-newer",
        "pinned",
        "another-head",
        "first-migration",
        "nothing-applied",
        "merge-point",
        "unknown-head",
    ],
)
def test_a_downgrade_is_refused_with_nothing_changed(signals: dict[str, Any], why: str) -> None:
    d = downgrade(**signals)
    assert d.act == "refuse" and d.spec is None
    assert why in d.why, d.why


def test_a_downgrade_of_the_revision_the_operator_named_goes_ahead() -> None:
    assert downgrade(expected=C).act == "downgrade"


@pytest.mark.parametrize(
    ("schema_ok", "smoke_ok", "health_ok", "ok"),
    [
        (True, True, True, True),
        (False, True, True, False),
        (True, False, True, False),
        (True, True, False, False),
    ],
)
def test_verify_migration_table(schema_ok: bool, smoke_ok: bool, health_ok: bool, ok: bool) -> None:
    smoke = SmokeResult(ok=smoke_ok, detail="smoke query ok (1 rows)")
    verdict, why = mg.verify_migration(schema_ok, "app at x", smoke, health_ok, "HTTP 200 OK")
    assert verdict is ok
    assert why == "app at x; smoke query ok (1 rows); API /health HTTP 200 OK"
