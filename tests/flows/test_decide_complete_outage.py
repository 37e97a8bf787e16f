"""§5 complete outage: the decide() table (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows import complete_outage as co
from runbook.actions import ActionClass
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tasks.railway import Deployment

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
POLICY = PolicyRules()


def deps(live_age_min: float, live_status: str = "SUCCESS", good: bool = True) -> dict[str, Any]:
    items = [
        Deployment(
            id="dep-live",
            status=live_status,
            created_at=NOW - timedelta(minutes=live_age_min),
            can_rollback=True,
            can_redeploy=True,
        )
    ]
    if good:
        items.append(
            Deployment(
                id="dep-good",
                status="SUCCESS",
                created_at=NOW - timedelta(days=1),
                can_rollback=True,
                can_redeploy=True,
            )
        )
    return {
        "deployments": tuple(items),
        "live_deployment": "dep-live",
        "live_status": live_status,
        "observed_at": NOW,
        "outage_since": NOW - timedelta(minutes=2),
    }


def down(**kw: Any) -> co.OutageSignals:
    base: dict[str, Any] = {"health_ok": False, "ready_ok": False, **deps(600)}
    base.update(kw)
    return co.OutageSignals(**base)


@pytest.mark.parametrize(
    ("signals", "cause", "act"),
    [
        (down(health_ok=True, ready_ok=True), "none", "none"),
        (down(dns_outcome="nxdomain"), "dns-failure", "escalate"),
        (down(dns_outcome="servfail"), "dns-failure", "escalate"),
        (down(dns_outcome="timeout", **deps(5)), "dns-failure", "escalate"),  # DNS first
        (down(railway_indicator="major"), "platform-incident", "escalate"),
        (down(railway_incidents=("Degraded deploys in us-west",)), "platform-incident", "escalate"),
        (down(**deps(600, live_status="CRASHED")), "bad-deploy", "rollback"),
        (down(**deps(10)), "bad-deploy", "rollback"),  # the outage began with a deploy
        (down(**deps(10, good=False)), "bad-deploy", "escalate"),  # nothing to roll back to
        (down(db_ok=False), "dependency-down", "check_database"),
        (down(redis_ok=False), "dependency-down", "escalate"),
        (down(), "unknown", "escalate"),
    ],
)
def test_complete_outage_decide_table(signals: co.OutageSignals, cause: str, act: str) -> None:
    decision = co.decide(signals, POLICY)
    assert (decision.cause, decision.act) == (cause, act), decision.why


def test_the_emergency_rollback_needs_two_approvers_and_is_destructive() -> None:
    decision = co.decide(down(**deps(600, live_status="CRASHED")), POLICY)
    assert decision.spec is not None
    assert decision.spec.action is ActionName.ROLLBACK_DEPLOYMENT
    assert decision.spec.two_person is True
    assert decision.spec.action_class is ActionClass.DESTRUCTIVE
    assert decision.spec.params == {"deployment_id": "dep-good", "from_deployment": "dep-live"}


@pytest.mark.parametrize(
    ("health", "ready", "ok"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_verify_outage_table(health: bool, ready: bool, ok: bool) -> None:
    assert co.verify_outage(health, ready, "x")[0] is ok
