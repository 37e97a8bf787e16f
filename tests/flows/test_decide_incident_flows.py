"""decide() tables for §1 high error rate, §2 high latency and §3 LLM provider (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.policy import Policy
from flows import database_connections as dc
from flows import high_error_rate as her
from flows import high_latency as hl
from flows import llm_provider as lp
from runbook.domain import Status
from tasks.railway import Deployment

pytestmark = pytest.mark.unit
POLICY = Policy()


NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def deployments(age_min: float, rollback_to: str | None) -> dict[str, Any]:
    """What Railway lists: the live deployment `age_min` old and, when `rollback_to` is set, an
    older deployment that can be rolled back to (decide() derives both from these)."""
    live = Deployment(
        id="dep-live",
        status="SUCCESS",
        created_at=NOW - timedelta(minutes=age_min),
        can_rollback=True,
        can_redeploy=True,
    )
    items = [live]
    if rollback_to:
        items.append(
            Deployment(
                id=rollback_to,
                status="SUCCESS",
                created_at=NOW - timedelta(days=2),
                can_rollback=True,
                can_redeploy=True,
            )
        )
    return {"deployments": tuple(items), "live_deployment": "dep-live", "observed_at": NOW}


def errors(**kw: Any) -> her.ErrorSignals:
    age = kw.pop("deploy_age_min", 400.0)
    rollback_to = kw.pop("rollback_to", "dep-good")
    base: dict[str, Any] = {
        "rate_5m_pct": 8.0,
        "rate_1h_pct": 3.0,
        "rate_recent_pct": 9.0,
        "causes": {},
        "current_model": "gpt-4o",
        "fallback_model": "gpt-4o-mini",
        "deploy_error_lines": 0,
        **deployments(age, rollback_to),
    }
    return her.ErrorSignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "cause", "act"),
    [
        (errors(rate_5m_pct=0.4), "none", "none"),
        (errors(rate_recent_pct=0.2, causes={"llm": 40}), "none", "none"),  # already over
        (errors(causes={"llm": 40, "application": 2}), "llm", "switch_model"),
        (errors(causes={"llm": 40}, current_model="gpt-4o-mini"), "llm", "escalate"),
        (
            errors(causes={"integration": 30}, degraded_integrations=("shopify",)),
            "integration",
            "notify",
        ),
        (
            errors(causes={"unknown": 3}, degraded_integrations=("gorgias",)),
            "integration",
            "notify",
        ),
        (errors(causes={"database": 25, "application": 5}), "database", "check_database"),
        (errors(causes={"application": 9}, db_connections_pct=97.0), "database", "check_database"),
        (
            errors(causes={"application": 30}, deploy_age_min=4.0, deploy_error_lines=12),
            "bad-deploy",
            "rollback",
        ),
        (
            errors(
                causes={"application": 30},
                deploy_age_min=4.0,
                deploy_error_lines=12,
                rollback_to=None,
            ),
            "bad-deploy",
            "escalate",
        ),
        (
            errors(
                rate_recent_pct=3.0,
                causes={"application": 30},
                deploy_age_min=4.0,
                deploy_error_lines=12,
            ),
            "unknown",
            "escalate",
        ),  # under 5 %: no rollback
        (
            errors(rate_5m_pct=7.0, rate_recent_pct=6.5, causes={"application": 30}),
            "unknown",
            "rollback",
        ),  # persistent > 5 % with no other cause
        (
            errors(rate_5m_pct=4.0, rate_recent_pct=7.0, causes={"application": 30}),
            "unknown",
            "escalate",
        ),  # not persistent, no fresh deploy
    ],
)
def test_high_error_rate_decide_table(signals: her.ErrorSignals, cause: str, act: str) -> None:
    decision = her.decide(signals, POLICY)
    assert (decision.cause, decision.act) == (cause, act), decision.why


def test_high_error_rate_severity_follows_policy() -> None:
    assert her.decide(errors(rate_5m_pct=1.0), POLICY).severity is Status.WARN
    assert her.decide(errors(rate_5m_pct=2.5), POLICY).severity is Status.CRITICAL


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("llm: openai rate_limit_exceeded: 429 Rate limit reached", "llm"),
        ("integration: shopify API returned 503", "integration"),
        ("database: connection pool exhausted", "database"),
        ("application: TypeError in handlers/order_status.py", "application"),
    ],
)
def test_error_message_cause(message: str, cause: str) -> None:
    assert her.error_cause(message) == cause


def latency(**kw: Any) -> hl.LatencySignals:
    base: dict[str, Any] = {
        "p99_s": 12.0,
        "slow_traces": 40,
        "traces": 200,
        "replicas": 2,
        "redis_ping_ms": 0.3,
        "current_model": "gpt-4o",
        "fallback_model": "gpt-4o-mini",
    }
    return hl.LatencySignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "bound", "act", "replicas_to"),
    [
        (latency(p99_s=3.0), "none", "none", None),
        (latency(p99_recent_s=2.0), "none", "none", None),  # the 15-min P99 lags: calm now
        (latency(long_queries=2), "database-bound", "report_slow_queries", None),
        (latency(slowest_statement_ms=9000.0), "database-bound", "report_slow_queries", None),
        (latency(idle_in_transaction=30), "database-bound", "report_slow_queries", None),
        (latency(redis_ping_ms=150.0), "redis-bound", "notify", None),
        (latency(), "capacity-bound", "scale_replicas", 5),  # 2 x 12 s / 5 s -> 5 (cap 5)
        (latency(p99_s=6.0, replicas=2), "capacity-bound", "scale_replicas", 3),
        # the 15-min P99 lags a fresh spike: size for how slow it is now (2 x 11 s / 5 s -> 5)
        (latency(p99_s=6.0, p99_recent_s=11.0, replicas=2), "capacity-bound", "scale_replicas", 5),
        (latency(replicas=5), "llm-bound", "switch_model", None),
        (latency(replicas=5, current_model="gpt-4o-mini"), "llm-bound", "notify", None),
    ],
)
def test_high_latency_decide_table(
    signals: hl.LatencySignals, bound: str, act: str, replicas_to: int | None
) -> None:
    decision = hl.decide(signals, POLICY)
    assert (decision.bound, decision.act, decision.replicas_to) == (bound, act, replicas_to)


def test_high_latency_scaling_respects_the_policy_cap() -> None:
    capped = hl.decide(latency(p99_s=40.0), Policy(max_replicas=3))
    assert capped.replicas_to == 3


OK = lp.Probe(ok=True, http_status=200)


def llm(**kw: Any) -> lp.LlmSignals:
    return lp.LlmSignals(**{"primary": OK, "fallback": OK, **kw})


@pytest.mark.parametrize(
    ("signals", "verdict", "act"),
    [
        (llm(), "healthy", "none"),
        (llm(primary=lp.Probe(ok=False, http_status=503)), "provider-outage", "fallback"),
        (llm(primary=lp.Probe(ok=False, http_status=0)), "provider-outage", "fallback"),
        (
            llm(primary=lp.Probe(ok=False, http_status=429, error_code="rate_limit_exceeded")),
            "rate-limited",
            "fallback",
        ),
        (
            llm(
                primary=lp.Probe(ok=False, http_status=429, error_code="rate_limit_exceeded"),
                fallback=lp.Probe(ok=False, http_status=429, error_code="rate_limit_exceeded"),
            ),
            "rate-limited",
            "fallback_and_queue",
        ),
        (
            llm(primary=lp.Probe(ok=False, http_status=429, error_code="insufficient_quota")),
            "quota-exhausted",
            "page",
        ),
        (llm(primary=lp.Probe(ok=False, http_status=401)), "bad-key", "page"),
        (
            llm(primary=lp.Probe(ok=False, http_status=503), on_fallback=True),
            "provider-outage",
            "none",
        ),
        (llm(on_fallback=True), "healthy", "restore"),
        (llm(on_fallback=True, queue_enabled=True), "healthy", "restore"),  # + stop queuing
        (llm(queue_enabled=True), "healthy", "stop_queuing"),  # §3: queuing off when healthy
        (llm(queue_enabled=True, indicator="major"), "healthy", "none"),  # not while degraded
        (llm(on_fallback=True, indicator="major"), "healthy", "none"),  # page not clear yet
        # the indicator alone can lie: "none" with an unresolved incident and LLM errors
        (
            llm(unresolved_incidents=("Elevated errors on GPT-4o",), llm_errors_5m=12),
            "provider-outage",
            "fallback",
        ),
    ],
)
def test_llm_provider_decide_table(signals: lp.LlmSignals, verdict: str, act: str) -> None:
    decision = lp.decide(signals)
    assert (decision.verdict, decision.act) == (verdict, act), decision.why
    if verdict == "bad-key":
        assert "key-rotation" in decision.why


@pytest.mark.parametrize(
    ("replicas", "p99", "last_up", "expected"),
    [
        (5, 2.0, None, None),  # we never scaled: leave what we found
        (5, 2.0, hl.ScaleUp(from_replicas=2, to_replicas=5, age_s=60), None),  # cool-down
        (5, 2.0, hl.ScaleUp(from_replicas=2, to_replicas=5, age_s=3600), 2),
        (5, 4.0, hl.ScaleUp(from_replicas=2, to_replicas=5, age_s=3600), None),  # not calm
        (2, 2.0, hl.ScaleUp(from_replicas=2, to_replicas=5, age_s=3600), None),  # done already
    ],
)
def test_scale_down_only_after_the_cool_down_and_when_calm(
    replicas: int, p99: float, last_up: hl.ScaleUp | None, expected: int | None
) -> None:
    assert hl.decide_scale_down(replicas, p99, last_up, POLICY) == expected


def dbs(**kw: Any) -> dc.DbSignals:
    base: dict[str, Any] = {
        "ready_ok": False,
        "db_errors_now": 30,
        "pool_size": 10,
        "rds_status": "available",
        "multi_az": True,
    }
    return dc.DbSignals(**{**base, **kw})


@pytest.mark.parametrize(
    ("signals", "problem", "act"),
    [
        (dbs(ready_ok=True, db_errors_now=0), "none", "none"),
        (dbs(rds_status="storage-full"), "rds-unavailable", "escalate"),
        (dbs(refused=True), "unreachable", "failover_db"),
        (dbs(refused=True, multi_az=False), "unreachable", "escalate"),
        (dbs(pool_exhausted=True), "pool-exhausted", "raise_pool"),
        (dbs(pool_exhausted=True, pool_size=30), "pool-exhausted", "restart_api"),
        (dbs(), "unclear", "escalate"),
        # the app's pool (10 x 3 replicas) 29/30 used: raise it before requests fail
        (
            dbs(ready_ok=True, db_errors_now=0, app_connections=29, replicas=3),
            "pool-exhausted",
            "raise_pool",
        ),
        (dbs(ready_ok=True, db_errors_now=0, app_connections=20, replicas=3), "none", "none"),
        (dbs(railway_db_status="CRASHED"), "railway-db-down", "escalate"),
    ],
)
def test_database_connections_decide_table(signals: dc.DbSignals, problem: str, act: str) -> None:
    decision = dc.decide(signals, POLICY)
    assert (decision.problem, decision.act) == (problem, act), decision.why
    if act == "raise_pool":
        assert decision.pool_to == POLICY.max_pool_size == 30  # the runbook's number


def test_llm_restore_also_turns_request_queuing_off_when_it_was_on() -> None:
    with_queue = lp.decide(llm(on_fallback=True, queue_enabled=True))
    assert [c.action.value for c in with_queue.specs] == [
        "restore_model",
        "disable_request_queue",
    ]
    assert with_queue.specs[1].params == {"REQUEST_QUEUE_ENABLED": "false"}
    without = lp.decide(llm(on_fallback=True))
    assert [c.action.value for c in without.specs] == ["restore_model"]


@pytest.mark.parametrize(("errors", "ok"), [(0, True), (1, False), (40, False)])
def test_llm_verify_looks_at_the_apps_llm_errors(errors: int, ok: bool) -> None:
    assert lp.verify_llm(errors, 30)[0] is ok


@pytest.mark.parametrize(
    ("connections", "pool", "replicas", "pct"),
    [
        (57, 20, 3, 95.0),  # hand count: 57 of 20 x 3 = 60
        (12, 30, 2, 20.0),
        (0, 10, 1, 0.0),
        (5, None, 2, None),  # pool size unknown
        (5, 10, 0, None),  # replicas unknown
    ],
)
def test_app_pool_pct_is_connections_over_pool_size_times_replicas(
    connections: int, pool: int | None, replicas: int, pct: float | None
) -> None:
    assert dc.app_pool_pct(connections, pool, replicas) == pct
