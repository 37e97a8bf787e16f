"""The flow skeleton's tables: every act a decide() can return is handled — either it changes
the platform through exactly one executor (flows/acts.py), or the flow handles it without a
change; a changing decision carries its typed spec; verify verdicts are pure tables."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from flows import complete_outage as co
from flows import database_connections as dc
from flows import deploy_watch as dw
from flows import deployment as dp
from flows import high_error_rate as her
from flows import high_latency as hl
from flows import llm_provider as lp
from flows import maintenance_plan as mp
from flows import metrics_watch as mw
from flows import migrations_plan as mgp
from flows import rds_resize as rr
from flows import rotate_openai_key as rok
from flows import rotate_store_key as rsk
from flows import scaling as sc
from flows import security_incident as si
from flows.acts import EXECUTORS, done_text
from runbook.actions import ActionClass
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tests.flows.test_decide_incident_flows import errors

pytestmark = pytest.mark.unit
POLICY = PolicyRules()
FLOWS = [her, hl, lp, dc, co, sc, rr, dw, dp, rsk, rok, si, mw, mp, mgp]


@pytest.mark.parametrize("module", FLOWS, ids=lambda m: m.__name__)
def test_every_act_is_either_an_executor_or_handled_without_a_change(module: Any) -> None:
    acts = set(get_args(module.Act))
    assert acts == set(module.ACT_ACTIONS) | module.OTHER_ACTS, (
        "a new Act must be added to ACT_ACTIONS (with an executor) or OTHER_ACTS"
    )
    assert not set(module.ACT_ACTIONS) & module.OTHER_ACTS


def test_every_action_name_has_exactly_one_executor_and_a_policy_class() -> None:
    assert set(EXECUTORS) == set(ActionName)
    for name in ActionName:
        assert name.value in POLICY.action_classes, f"{name} has no default class"
        assert done_text(name, {}) or True


def test_decide_returns_the_typed_spec_of_a_changing_act() -> None:
    rollback = her.decide(
        errors(
            causes={"application": 30},
            deploy_age_min=4.0,
            deploy_error_lines=12,
            target="railway:svc",
        ),
        POLICY,
    )
    assert rollback.act == "rollback" and rollback.spec is not None
    assert rollback.spec.action is ActionName.ROLLBACK_DEPLOYMENT
    assert rollback.spec.target == "railway:svc"
    assert rollback.spec.params == {"deployment_id": "dep-good", "from_deployment": "dep-live"}
    assert rollback.spec.action_class is ActionClass.DESTRUCTIVE
    switch = her.decide(
        her.ErrorSignals(
            rate_5m_pct=8.0,
            rate_1h_pct=3.0,
            rate_recent_pct=9.0,
            causes={"llm": 40},
            current_model="gpt-4o",
        ),
        POLICY,
    )
    assert switch.spec is not None and switch.spec.params == {"DEFAULT_MODEL": "gpt-4o-mini"}
    assert switch.spec.undo_params == {"DEFAULT_MODEL": "gpt-4o"}
    assert switch.spec.action_class is ActionClass.SAFE
    none = her.decide(
        her.ErrorSignals(rate_5m_pct=0.1, rate_1h_pct=0.1, rate_recent_pct=0.1, causes={}), POLICY
    )
    assert none.spec is None


def test_llm_fallback_and_queue_is_two_specs_in_order() -> None:
    down = lp.Probe(ok=False, http_status=503)
    decision = lp.decide(lp.LlmSignals(primary=down, fallback=down), POLICY)
    assert decision.act == "fallback_and_queue"
    assert [s.action for s in decision.specs] == list(lp.ACT_ACTIONS["fallback_and_queue"])


def test_a_policy_block_cannot_make_a_decided_rollback_look_safe() -> None:
    looser = PolicyRules(action_classes={"rollback_deployment": "safe"})
    from runbook.policy import Floor

    effective = looser.with_floor(Floor())
    d = her.decide(
        errors(rate_5m_pct=7.0, rate_recent_pct=6.5, causes={"application": 30}),
        effective,
    )
    assert d.spec is not None and d.spec.action_class is ActionClass.DESTRUCTIVE


@pytest.mark.parametrize(
    ("rate", "warn", "ok"),
    [(0.2, 0.5, True), (0.5, 0.5, True), (0.51, 0.5, False), (9.0, 0.5, False)],
)
def test_verify_errors_table(rate: float, warn: float, ok: bool) -> None:
    verdict, why = her.verify_errors(rate, warn, "rollback")
    assert verdict is ok and "since the rollback" in why


@pytest.mark.parametrize(("p99", "ok"), [(1.0, True), (5.0, True), (5.1, False), (30.0, False)])
def test_verify_latency_table(p99: float, ok: bool) -> None:
    assert hl.verify_latency(p99, 5.0, 30)[0] is ok


@pytest.mark.parametrize(
    ("ready", "errors", "ok"), [(True, 0, True), (True, 1, False), (False, 0, False)]
)
def test_verify_database_table(ready: bool, errors: int, ok: bool) -> None:
    assert dc.verify_database(ready, "ok", errors, 15)[0] is ok
