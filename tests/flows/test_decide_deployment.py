"""Deployment Procedures' pure rules as tables: the watch's verdict (regression, broken, not
finished, inconclusive), what manual-deploy and rollback decide, the rollback's verify, and the
parameter types' one-line refusals. No Prefect, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from flows import deploy_watch as dw
from flows import deployment as dp
from flows.acts import EXECUTORS
from runbook.actions import ActionClass
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tasks.railway import Deployment

pytestmark = pytest.mark.unit
POLICY = PolicyRules()  # error rate warn 0.5 %, P99 warn 5 s / critical 10 s
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def dep(n: int, status: str = "SUCCESS", can_rollback: bool = True, **kw: Any) -> Deployment:
    return Deployment(
        id=f"d{n}",
        status=status,
        created_at=T0 + timedelta(hours=n),
        can_rollback=can_rollback,
        can_redeploy=True,
        commit=f"c0mm17{n}",
        service_id=kw.get("service_id", "svc"),
    )


# d1 good, d2 good (the previous one), d3 watched
HISTORY = (dep(3, can_rollback=False), dep(2), dep(1))


def watch(**kw: Any) -> dw.WatchSignals:
    base: dict[str, Any] = {
        "deployment_id": "d3",
        "status": "SUCCESS",
        "deployments": HISTORY,
        "live_deployment": "d3",
        "replies_before": 400,
        "errors_before": 1,  # 0.25 %
        "replies_after": 400,
        "errors_after": 1,
        "p99_before_s": 2.0,
        "p99_after_s": 2.2,
        "target": "railway:svc",
    }
    return dw.WatchSignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "verdict", "act", "pages"),
    [
        (watch(), "healthy", "none", False),
        (watch(errors_after=72), "regressed", "rollback", False),  # 18 % after
        (watch(errors_before=0, errors_after=5), "regressed", "rollback", False),  # 1.25 % > warn
        (watch(errors_before=0, errors_after=4), "healthy", "none", False),  # too few errors
        (watch(replies_after=80, errors_after=1), "healthy", "none", False),  # 1 stray error
        (watch(errors_before=8, errors_after=12), "healthy", "none", False),  # 3 % < 2 x 2 %
        (watch(errors_before=8, errors_after=20), "regressed", "rollback", False),  # 5 % > 4 %
        # an already unhealthy baseline does not excuse a worse deploy: 16 % vs 9.5 %
        (watch(errors_before=38, errors_after=65), "regressed", "rollback", False),
        (watch(errors_before=38, errors_after=50), "healthy", "none", False),  # 12.5 % < 14.25 %
        (watch(p99_after_s=6.0), "regressed", "rollback", False),  # > warn and > 1.5 x 2 s
        (watch(p99_before_s=4.5, p99_after_s=6.0), "healthy", "none", False),  # < 1.5 x
        (watch(p99_before_s=None, p99_after_s=8.0), "healthy", "none", False),  # < critical
        (watch(p99_before_s=None, p99_after_s=12.0), "regressed", "rollback", False),
        (watch(replies_after=5, errors_after=5), "inconclusive", "none", False),
        (watch(finished=False, status="BUILDING", waited_s=900), "not-finished", "escalate", True),
        (watch(live_deployment="d2", status="REMOVED"), "not-live", "none", False),
        (watch(live_deployment="d2"), "not-live", "none", False),  # rolled back already
        # a build that failed: the previous good one still serves → page only
        (watch(status="FAILED", live_deployment="d2"), "broken", "escalate", True),
        # crashed while live → page and roll back
        (watch(status="CRASHED"), "broken", "rollback", True),
        # nothing to roll back to
        (watch(errors_after=72, deployments=(dep(3),)), "regressed", "escalate", True),
        (watch(status="CRASHED", deployments=(dep(3),)), "broken", "escalate", True),
    ],
)
def test_watch_decide_table(signals: dw.WatchSignals, verdict: str, act: str, pages: bool) -> None:
    d = dw.decide(signals, POLICY)
    assert (d.verdict, d.act, d.page) == (verdict, act, pages), d.why
    assert (d.spec is not None) is (act == "rollback")


def test_a_regression_rolls_back_to_the_last_known_good_from_the_live_one() -> None:
    d = dw.decide(watch(errors_after=72), POLICY)
    assert d.spec is not None
    assert d.spec.action is ActionName.ROLLBACK_DEPLOYMENT
    assert d.spec.params == {"deployment_id": "d2", "from_deployment": "d3"}
    assert d.spec.action_class is ActionClass.DESTRUCTIVE
    assert d.spec.target == "railway:svc"
    assert "18.00 % after vs 0.25 % before" in d.why


def test_a_newer_live_deployment_is_never_rolled_back_for_an_older_broken_one() -> None:
    newer = (dep(4), *HISTORY)
    d = dw.decide(watch(status="CRASHED", deployments=newer, live_deployment="d4"), POLICY)
    assert (d.act, d.page) == ("escalate", True) and "d4 is live now" in d.why


@pytest.mark.parametrize(
    ("rate", "errors", "live_ok", "ok"),
    [
        (0.2, 1, True, True),
        (0.5, 5, True, True),
        (0.6, 6, True, False),
        (18.0, 30, True, False),
        (2.5, 1, True, True),  # one stray error in a few replies is noise
        (0.1, 0, False, False),
        (None, 0, True, True),
    ],
)
def test_verify_rollback_table(rate: float | None, errors: int, live_ok: bool, ok: bool) -> None:
    verdict, why = dw.verify_rollback(rate, errors, 0.5, live_ok, "d2")
    assert verdict is ok and "d2" in why


def deploy(**kw: Any) -> dp.DeploySignals:
    base: dict[str, Any] = {
        "commit_sha": "abc1234",
        "environment": "staging",
        "live_deployment": "d3",
        "live_commit": "0000000",
        "target": "railway:svc@staging",
    }
    return dp.DeploySignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "act"),
    [
        (deploy(), "deploy"),
        (deploy(live_commit="abc1234def5678"), "none"),  # the short sha is live already
        (deploy(in_progress=("d4 BUILDING",)), "refuse"),
        (deploy(environment="production", target="railway:svc"), "deploy"),
    ],
)
def test_deploy_decide_table(signals: dp.DeploySignals, act: str) -> None:
    d = dp.decide_deploy(signals, POLICY)
    assert d.act == act, d.why
    if act == "deploy":
        assert d.spec is not None and d.spec.action is ActionName.DEPLOY_COMMIT
        assert d.spec.params == {"commit_sha": "abc1234", "environment": signals.environment}
        assert d.spec.target == signals.target
        assert d.spec.action_class is ActionClass.DESTRUCTIVE  # approval unless auto-approved


def back(**kw: Any) -> dp.RollbackSignals:
    base: dict[str, Any] = {
        "service_id": "svc",
        "deployments": HISTORY,
        "live_deployment": "d3",
        "target": "railway:svc",
    }
    return dp.RollbackSignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "to", "why"),
    [
        (back(), "d2", "last known good"),
        (back(requested="d1", found=dep(1)), "d1", "requested"),
        (back(deployments=(dep(3),)), None, "no older SUCCESS deployment of svc"),
        (back(requested="d9"), None, "d9 does not exist"),
        (
            back(requested="w1", found=dep(1, service_id="svc-worker")),
            None,
            "belongs to service svc-worker, not svc",
        ),
        (back(requested="d3", found=dep(3, can_rollback=False)), None, "is the live one"),
        (
            back(requested="d1", found=dep(1, "FAILED", can_rollback=False)),
            None,
            "cannot be rolled back to (FAILED, canRollback false)",
        ),
    ],
)
def test_rollback_decide_table(signals: dp.RollbackSignals, to: str | None, why: str) -> None:
    d = dp.decide_rollback(signals, POLICY)
    assert why in d.why
    if to is None:
        assert d.act == "refuse" and d.spec is None
    else:
        assert d.act == "rollback" and d.spec is not None
        assert d.spec.params == {"deployment_id": to, "from_deployment": "d3"}
        assert d.spec.action_class is ActionClass.DESTRUCTIVE


@pytest.mark.parametrize("module", [dw, dp], ids=lambda m: m.__name__)
def test_every_act_is_an_executor_or_handled_without_a_change(module: Any) -> None:
    assert set(get_args(module.Act)) == set(module.ACT_ACTIONS) | module.OTHER_ACTS
    assert not set(module.ACT_ACTIONS) & module.OTHER_ACTS
    assert all(action in EXECUTORS for action in module.ACT_ACTIONS.values())


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (dp.CommitSha, "zz", "commit_sha must be a git commit: 7 to 40 hex characters"),
        (dp.CommitSha, "abc", "commit_sha must be a git commit"),
        (dp.CommitSha, "a" * 41, "commit_sha must be a git commit"),
        (dp.CommitSha, "main; rm -rf", "commit_sha must be a git commit"),
        (dp.DeploymentId, "", "deployment_id must be a Railway deployment id"),
        (dp.DeploymentId, "dep 1", "deployment_id must be a Railway deployment id"),
        (dp.DeploymentId, "../etc", "deployment_id must be a Railway deployment id"),
    ],
)
def test_bad_parameters_are_refused_with_one_line_naming_them(
    kind: Any, value: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(kind).validate_python(value)
    errors = caught.value.errors()
    assert len(errors) == 1 and message in errors[0]["msg"]
    assert value not in errors[0]["msg"] or not value, "the message does not echo the input"


def test_good_parameters_pass_normalised() -> None:
    assert TypeAdapter(dp.CommitSha).validate_python(" ABCDEF1 ") == "abcdef1"
    assert TypeAdapter(dp.DeploymentId).validate_python("dep-0004-1a2b3c4d") == "dep-0004-1a2b3c4d"
