"""Scaling Procedures' decide() and verify tables: pure, no Prefect, no network."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from flows import rds_resize as rr
from flows import scaling as sc
from flows.acts import EXECUTORS
from runbook.actions import ActionClass
from runbook.plan import ActionName
from runbook.policy import PolicyRules
from tasks.rds import DbInstance, DbWait

pytestmark = pytest.mark.unit
POLICY = PolicyRules()  # max_replicas 5, P99 warn 5 s, max 8 vCPU / 16 GB, db.t3.* prices


@pytest.mark.parametrize("module", [sc, rr], ids=lambda m: m.__name__)
def test_every_scaling_act_is_an_executor_or_changes_nothing(module: Any) -> None:
    assert set(get_args(module.Act)) == set(module.ACT_ACTIONS) | module.OTHER_ACTS
    assert not set(module.ACT_ACTIONS) & module.OTHER_ACTS
    assert set(module.ACT_ACTIONS.values()) <= set(EXECUTORS)


def replicas(
    requested: int, current: int = 2, p99: float | None = None, traces: int = 0
) -> sc.ReplicaSignals:
    return sc.ReplicaSignals(
        requested=requested, current=current, p99_hour_s=p99, traces_hour=traces, target="rw:s"
    )


@pytest.mark.parametrize(
    ("signals", "act", "said"),
    [
        (replicas(6), "refuse", "replicas=6 is over the Policy cap max_replicas=5"),
        (replicas(50, current=5), "refuse", "max_replicas=5"),
        (replicas(2), "none", "already runs 2"),
        (replicas(5), "scale_up", "scale up 2 → 5"),
        (replicas(3, current=2, p99=None), "scale_up", "scale up 2 → 3"),  # up needs no traffic
        # down: 4 replicas saw P99 12 s → ceil(4 * 12 / 5) = 10 needed
        (replicas(2, current=4, p99=12.0, traces=500), "refuse", "needs 10"),
        # 4 replicas at P99 2.4 s need ceil(1.92) = 2: down to 2 is fine, to 1 is not
        (replicas(2, current=4, p99=2.4, traces=500), "scale_down", "scale down 4 → 2"),
        (replicas(1, current=4, p99=2.4, traces=500), "refuse", "below what traffic needs"),
        (replicas(1, current=2, p99=1.5, traces=600), "scale_down", "needs 1"),
        # cannot tell: no traces, or LangSmith unreadable → no scale-down
        (replicas(1, current=3, p99=0.0, traces=0), "refuse", "cannot tell"),
        (replicas(1, current=3, p99=None), "refuse", "cannot tell"),
    ],
)
def test_decide_replicas_table(signals: sc.ReplicaSignals, act: str, said: str) -> None:
    d = sc.decide_replicas(signals, POLICY)
    assert d.act == act, d
    assert said in d.why
    if act in sc.ACT_ACTIONS:
        assert d.spec is not None and d.spec.action is ActionName.SCALE_REPLICAS
        assert d.spec.params == {"replicas": signals.requested, "from": signals.current}
        assert d.spec.undo_params == {"replicas": signals.current, "from": signals.requested}
        assert d.spec.action_class is ActionClass.SAFE and d.spec.target == "rw:s"
    else:
        assert d.spec is None


def test_the_replica_cap_is_the_policys_not_a_constant() -> None:
    roomy = PolicyRules(max_replicas=12)
    assert sc.decide_replicas(replicas(8), roomy).act == "scale_up"
    assert sc.decide_replicas(replicas(8), POLICY).act == "refuse"


@pytest.mark.parametrize(
    ("current", "p99", "warn", "need"),
    [(2, 1.5, 5.0, 1), (2, 5.0, 5.0, 2), (2, 5.1, 5.0, 3), (4, 12.0, 5.0, 10), (3, 0.0, 5.0, 1)],
)
def test_replicas_needed_table(current: int, p99: float, warn: float, need: int) -> None:
    assert sc.replicas_needed(current, p99, warn) == need


@pytest.mark.parametrize(
    ("vcpus", "memory", "act", "said"),
    [
        (2.0, 4.0, "set_limits", "set 2 vCPU and 4 GB"),
        (8.0, 16.0, "set_limits", "redeploys"),
        (12.0, 4.0, "refuse", "vcpus=12 is over the Policy cap max_vcpus=8"),
        (2.0, 32.0, "refuse", "memory_gb=32 is over the Policy cap max_memory_gb=16"),
    ],
)
def test_decide_limits_table(vcpus: float, memory: float, act: str, said: str) -> None:
    d = sc.decide_limits(sc.LimitSignals(vcpus=vcpus, memory_gb=memory, target="rw:s"), POLICY)
    assert d.act == act and said in d.why
    if act == "set_limits":
        assert d.spec is not None and d.spec.action is ActionName.SET_SERVICE_LIMITS
        assert d.spec.params == {"vcpus": vcpus, "memory_gb": memory}
        assert d.spec.action_class is ActionClass.DESTRUCTIVE  # it redeploys: approval
    else:
        assert d.spec is None


def test_signals_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        sc.ReplicaSignals(requested=1, current=1, surprise=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="extra"):
        rr.ResizeSignals(requested="db.t3.large", current="db.t3.medium", x=1)  # type: ignore[call-arg]


def resize(requested: str = "db.t3.large", **kw: Any) -> rr.ResizeSignals:
    base: dict[str, Any] = {"current": "db.t3.medium", "multi_az": True, "instance_id": "db1"}
    return rr.ResizeSignals(requested=requested, **{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "act", "said"),
    [
        (resize(), "resize", "db.t3.medium → db.t3.large now"),
        (resize(apply_immediately=False), "resize", "at the next maintenance window"),
        (resize(status="modifying"), "refuse", "is modifying"),
        (resize("db.t3.medium"), "none", "already runs db.t3.medium"),
        (resize(pending="db.t3.large", apply_immediately=False), "none", "already pending"),
        # pending for the window, wanted now: applied now
        (resize(pending="db.t3.large"), "resize", "now"),
        # back to the current class cancels a pending change
        (resize("db.t3.medium", pending="db.t3.large"), "resize", "db.t3.medium → db.t3.medium"),
    ],
)
def test_decide_resize_table(signals: rr.ResizeSignals, act: str, said: str) -> None:
    d = rr.decide(signals, POLICY)
    assert d.act == act and said in d.why, d
    if act == "resize":
        assert d.spec is not None and d.spec.action is ActionName.MODIFY_DB_INSTANCE_CLASS
        assert d.spec.two_person and d.spec.action_class is ActionClass.DESTRUCTIVE
        assert d.spec.target == "rds:db1"
        assert d.spec.params == {
            "instance_class": signals.requested,
            "apply_immediately": signals.apply_immediately,
            "from": "db.t3.medium",
        }
    else:
        assert d.spec is None


def test_resize_figures_show_classes_cost_multi_az_and_downtime() -> None:
    shown = rr.decide(resize(standby_zone="us-east-1b"), POLICY).figures
    assert shown["current class"] == "db.t3.medium" and shown["target class"] == "db.t3.large"
    # Multi-AZ: two instances at 0.072 → 0.145 $/h each
    assert shown["hourly cost difference"].startswith("$0.144/h → $0.290/h: +0.146 USD/h")
    assert "+107 USD/month" in shown["hourly cost difference"]
    assert shown["Multi-AZ"] == "yes (standby in us-east-1b)"
    assert "failover" in shown["expected downtime"]
    single = rr.decide(resize("db.t3.small", multi_az=False), POLICY).figures
    assert single["hourly cost difference"].startswith("$0.072/h → $0.036/h: -0.036 USD/h")
    assert single["Multi-AZ"] == "no" and "unavailable" in single["expected downtime"]
    later = rr.decide(resize(apply_immediately=False), POLICY).figures
    assert later["expected downtime"].startswith("none now")
    unpriced = rr.decide(resize("db.r6g.large"), POLICY).figures
    assert "db.r6g.large is not in the Policy price table" in unpriced["hourly cost difference"]


@pytest.mark.parametrize(
    ("requested", "orderable", "refused"),
    [
        ("db.t3.large", True, None),
        ("db.r6g.large", True, None),  # offered, merely not priced: the form says so
        ("db.x9.huge", False, "instance_class='db.x9.huge' is not an RDS class offered"),
        ("db.t3.large", None, None),  # RDS lists nothing: the price table decides
        ("db.r6g.large", None, "not in the Policy price table"),
    ],
)
def test_class_refusal_table(requested: str, orderable: bool | None, refused: str | None) -> None:
    why = rr.class_refusal(requested, orderable, POLICY.instance_hourly_usd)
    assert (why is None) if refused is None else (why is not None and refused in why)


def instance(cls: str, status: str = "available", pending: str | None = None) -> DbInstance:
    return DbInstance(
        instance_id="db1",
        status=status,
        instance_class=cls,
        multi_az=True,
        availability_zone="a",
        secondary_availability_zone="b",
        pending_instance_class=pending,
        read_replicas=(),
        endpoint=None,
    )


def waited(i: DbInstance, timed_out: bool = False) -> DbWait:
    return DbWait(instance=i, seen=("modifying", i.status), waited_s=3.2, timed_out=timed_out)


@pytest.mark.parametrize(
    ("after", "wait", "ready", "ok", "said"),
    [
        (instance("db.t3.large"), True, True, True, "(modifying → available)"),
        (instance("db.t3.large"), True, False, False, "/health/ready: db down"),
        (instance("db.t3.medium", "modifying", "db.t3.large"), "timeout", True, False, "still"),
        (instance("db.t3.medium"), True, True, False, "not db.t3.large"),
    ],
)
def test_verify_resize_applied_now_table(
    after: DbInstance, wait: object, ready: bool, ok: bool, said: str
) -> None:
    verdict, why = rr.verify_resize(
        after,
        target="db.t3.large",
        before="db.t3.medium",
        apply_immediately=True,
        waited=waited(after, timed_out=wait == "timeout"),
        ready_ok=ready,
        ready_summary="ok" if ready else "db down",
    )
    assert verdict is ok and said in why


@pytest.mark.parametrize(
    ("after", "ok"),
    [
        (instance("db.t3.medium", pending="db.t3.large"), True),
        (instance("db.t3.large"), False),  # applied now, not deferred
        (instance("db.t3.medium"), False),  # nothing pending
    ],
)
def test_verify_resize_deferred_table(after: DbInstance, ok: bool) -> None:
    verdict, _ = rr.verify_resize(
        after, target="db.t3.large", before="db.t3.medium", apply_immediately=False
    )
    assert verdict is ok


@pytest.mark.parametrize(("reported", "wanted", "ok"), [(4, 4, True), (2, 4, False)])
def test_verify_replicas_table(reported: int, wanted: int, ok: bool) -> None:
    assert sc.verify_replicas(reported, wanted)[0] is ok


@pytest.mark.parametrize(
    ("health", "ready", "ok"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_verify_health_table(health: bool, ready: bool, ok: bool) -> None:
    assert sc.verify_health(health, ready, "x")[0] is ok


def test_bad_parameters_are_one_line_naming_the_parameter_and_value() -> None:
    prefect_says = (
        "Flow run received invalid parameters:\n"
        " - replicas: Input should be greater than or equal to 1\n"
        " - verify_window_s: Input should be a valid number"
    )
    line = sc.bad_parameters("scale-replicas", prefect_says, {"replicas": -1, "dry_run": False})
    assert "\n" not in line
    assert line.startswith("scale-replicas: bad parameters replicas=-1 (Input should be greater")
    assert "verify_window_s: Input should be a valid number" in line
