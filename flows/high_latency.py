"""Runbook §2 "High Latency (P99 > 10s)": scale replicas toward 5, check slow queries and Redis,
consider a model downgrade for speed."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, AppRedis, LangSmith, LlmProbe, Railway
from blocks.policy import Policy
from flows.acts import Platform, done_text
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from runbook import ledger, opsdb
from runbook.domain import Status, classify
from runbook.plan import MODEL_VARIABLE, ActionName, ActSpec, model_switch, spec
from tasks import app_metrics, langsmith, railway
from tasks.postgres import get_pg_connections_by_state, get_pg_slow_queries
from tasks.redis import get_redis_latency

Bound = Literal["none", "database-bound", "redis-bound", "llm-bound", "capacity-bound"]
Act = Literal["none", "scale_replicas", "switch_model", "report_slow_queries", "notify"]


class LatencySignals(BaseModel):
    model_config = ConfigDict(frozen=True)

    p99_s: float
    p99_recent_s: float | None = None  # over the Policy's recent window: still slow now?
    slow_traces: int
    traces: int
    replicas: int
    long_queries: int = 0  # active statements running > 5 s
    slowest_statement_ms: float | None = None  # pg_stat_statements, when installed
    idle_in_transaction: int = 0
    redis_ping_ms: float | None = None
    current_model: str | None = None
    fallback_model: str = "gpt-4o-mini"
    target: str = "railway:api"  # where acts go (the Railway service)


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    bound: Bound
    severity: Status
    act: Act
    why: str
    replicas_to: int | None = None
    spec: ActSpec | None = None  # the change to make, when `act` is one


# the acts that change the platform (flows/acts.py); the others are reports
ACT_ACTIONS: dict[str, ActionName] = {
    "scale_replicas": ActionName.SCALE_REPLICAS,
    "switch_model": ActionName.SWITCH_MODEL,
}
OTHER_ACTS = frozenset({"none", "report_slow_queries", "notify"})


def decide(s: LatencySignals, policy: Policy) -> Decision:
    """All of §2's branching, as a pure function; a changing act comes with its spec."""
    decision = _decide(s, policy)
    if decision.act == "scale_replicas" and decision.replicas_to:
        params = {"replicas": decision.replicas_to, "from": s.replicas}
        undo = {"replicas": s.replicas, "from": decision.replicas_to}
        change = spec(policy, ActionName.SCALE_REPLICAS, s.target, decision.why, params, undo)
        return decision.model_copy(update={"spec": change})
    if decision.act == "switch_model":
        change = model_switch(policy, s.target, decision.why, s.fallback_model, s.current_model)
        return decision.model_copy(update={"spec": change})
    return decision


def verify_latency(p99_s: float, warn_s: float, window_s: int) -> tuple[bool, str]:
    """§2's verify verdict on P99 observed again after the act (pure)."""
    return p99_s <= warn_s, f"P99 {p99_s:.1f} s over the last {window_s} s"


def _decide(s: LatencySignals, policy: Policy) -> Decision:
    p99 = policy.threshold("p99_latency_s")
    severity = classify(s.p99_s, p99.warn, p99.critical)
    seen = f"P99 {s.p99_s:.1f} s over {s.traces} traces ({s.slow_traces} > 5 s)"
    if severity is Status.OK:
        return Decision(
            bound="none",
            severity=severity,
            act="none",
            why=f"{seen}: under the {p99.warn:g} s warn threshold",
        )
    if s.p99_recent_s is not None and s.p99_recent_s <= p99.warn:
        return Decision(
            bound="none",
            severity=severity,
            act="none",
            why=f"{seen}, but {s.p99_recent_s:.1f} s now: no longer slow, nothing to fix",
        )
    slow_ms = policy.threshold("slow_query_mean_ms")
    stuck = policy.threshold("idle_in_transaction")
    if (
        s.long_queries > 0
        or (s.slowest_statement_ms or 0) > slow_ms.critical
        or s.idle_in_transaction > stuck.critical
    ):
        return Decision(
            bound="database-bound",
            severity=severity,
            act="report_slow_queries",
            why=f"{seen}; {s.long_queries} statements running > 5 s, "
            f"{s.idle_in_transaction} sessions idle in transaction",
        )
    redis = policy.threshold("redis_latency_ms")
    if s.redis_ping_ms is not None and s.redis_ping_ms > redis.warn:
        return Decision(
            bound="redis-bound",
            severity=severity,
            act="notify",
            why=f"{seen}; Redis PING {s.redis_ping_ms:.1f} ms",
        )
    if s.replicas < policy.max_replicas:
        # size for how slow it is now: the long window lags behind a fresh spike
        now_s = max(s.p99_s, s.p99_recent_s or 0.0)
        wanted = math.ceil(s.replicas * now_s / p99.warn) if s.replicas else s.replicas + 1
        target = max(s.replicas + 1, min(policy.max_replicas, wanted))
        return Decision(
            bound="capacity-bound",
            severity=severity,
            act="scale_replicas",
            why=f"{seen} with {s.replicas} replicas",
            replicas_to=target,
        )
    if s.current_model != s.fallback_model:
        return Decision(
            bound="llm-bound",
            severity=severity,
            act="switch_model",
            why=f"{seen} at the replica cap ({policy.max_replicas}); downgrade the model",
        )
    return Decision(
        bound="llm-bound",
        severity=severity,
        act="notify",
        why=f"{seen} at the replica cap and already on the fallback model",
    )


async def observe(
    db: AppDatabase, cache: AppRedis, ls: LangSmith, rw: Railway, policy: Policy
) -> tuple[LatencySignals, dict[str, Any]]:
    """§2's diagnosis, concurrently."""
    (trace, states, slow, longq), (redis, instance, model, recent) = await asyncio.gather(
        asyncio.gather(
            langsmith.get_trace_latency(ls, 900, 5.0),
            get_pg_connections_by_state(db, policy),
            get_pg_slow_queries(db, policy),
            app_metrics.get_long_running_queries(db, 5.0),
        ),
        asyncio.gather(
            get_redis_latency(cache, policy),
            railway.get_service_instance(rw),
            railway.get_variable(rw, MODEL_VARIABLE),
            langsmith.get_trace_latency(ls, policy.recent_window_s, 5.0),
        ),
    )
    top = slow.details.get("top") or []
    signals = LatencySignals(
        p99_s=trace.p99_s,
        p99_recent_s=recent.p99_s if recent.runs else None,
        slow_traces=trace.slow,
        traces=trace.runs,
        replicas=instance.num_replicas,
        long_queries=longq.count,
        slowest_statement_ms=top[0]["mean_ms"] if top else None,
        idle_in_transaction=int(states.details.get("idle_in_transaction", 0)),
        redis_ping_ms=redis.details.get("median_ms", redis.details.get("avg_ms")),
        current_model=model.value,
        target=f"railway:{rw.service_id}",
    )
    evidence = {
        "p99_s": trace.p99_s,
        "p50_s": trace.p50_s,
        "slow_traces": trace.slow,
        "replicas": instance.num_replicas,
        "pg_states": states.summary,
        "long_running_queries": [q.model_dump() for q in longq.queries[:5]],
        "redis": redis.summary,
        "slow_statements": slow.summary,
    }
    return signals, evidence


@flow(
    name="high-latency",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def high_latency(
    incident_id: str | None = None, dry_run: bool = False, verify_window_s: float = 90.0
) -> RemediationResult:
    """Runbook §2 High Latency: database-, Redis-, LLM- or capacity-bound? Scale replicas
    toward 5 (capped by Policy), downgrade the model, or report slow queries; verify P99."""
    run = await IncidentRun.start("high-latency", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    db, cache, ls, rw, llm = await asyncio.gather(
        AppDatabase.resolve(),
        AppRedis.resolve(),
        LangSmith.resolve(),
        Railway.resolve(),
        LlmProbe.resolve(),
    )
    signals, evidence = await observe(db, cache, ls, rw, policy)
    signals = signals.model_copy(update={"fallback_model": llm.fallback_model})
    await run.seen(f"P99 {signals.p99_s} s, {signals.replicas} replicas", **evidence)
    decision = decide(signals, policy)
    await run.decided(f"{decision.bound} → {decision.act}", decision.why)
    target = f"railway:{rw.service_id}"
    warn = policy.threshold("p99_latency_s").warn
    platform = Platform(railway=rw)

    async def p99_since(acted_at: float) -> tuple[bool, str]:
        window = max(15, int(asyncio.get_running_loop().time() - acted_at))
        trace = await langsmith.get_trace_latency(ls, window, 5.0)
        return verify_latency(trace.p99_s, warn, window)

    if decision.spec is not None:
        change = decision.spec
        stays = (
            f" (they stay up for the Policy cool-down of {policy.scale_down_cooldown_s} s"
            " before any scale-down)"
            if change.action is ActionName.SCALE_REPLICAS
            else ""
        )
        return await run.execute(
            decision.act,
            change,
            platform,
            evidence=evidence,
            describe=done_text(change.action, change.params) + stays,
            verify=p99_since,
            settle_s=15.0,
            window_s=verify_window_s,
        )

    if decision.act == "report_slow_queries":
        lines = [
            "# Slow-query report",
            "",
            decision.why,
            "",
            "| pid | seconds | query |",
            "|---|---|---|",
        ]
        for q in evidence["long_running_queries"]:
            query = str(q["query"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {q['pid']} | {q['seconds']:.1f} | `{query}` |")
        lines += [
            "",
            f"pg_stat_statements: {evidence['slow_statements']}",
            f"Sessions: {evidence['pg_states']}",
        ]
        await acreate_markdown_artifact(
            key="slow-query-report",
            markdown="\n".join(lines),
            description="Slow queries behind high latency",
        )
        await run.note("notified", "slow-query report published")
        return await run.finish(
            decision.act,
            decision.why,
            verified=None,
            summary="Slow-query report attached; no automatic change.",
        )
    if decision.act == "notify":
        await run.note("notified", decision.why)
        return await run.finish(decision.act, decision.why, verified=None, summary=decision.why)
    async with await opsdb.connect() as conn:
        last = await ledger.last_done(conn, "scale_replicas", target)
    last_up = None
    if last is not None and "from" in last.params:
        age = (datetime.now(UTC) - last.updated_at).total_seconds()
        last_up = ScaleUp(
            from_replicas=int(last.params["from"]),
            to_replicas=int(last.params["replicas"]),
            age_s=age,
        )
    calm_window = max(policy.recent_window_s, min(policy.scale_down_cooldown_s, 300))
    calm = await langsmith.get_trace_latency(ls, calm_window, 5.0)
    down_to = decide_scale_down(signals.replicas, calm.p99_s, last_up, policy)
    if down_to is None:
        return await run.finish(decision.act, decision.why, verified=True, summary=decision.why)
    now_n = signals.replicas
    why = (
        f"P99 {calm.p99_s:.1f} s over {calm_window} s with {now_n} replicas, scaled up "
        f"{last_up.age_s / 60 if last_up else 0:.0f} min ago: back to {down_to}"
    )
    await run.decided("scale back down", why)
    back = spec(
        policy,
        ActionName.SCALE_REPLICAS,
        target,
        why,
        {"replicas": down_to, "from": now_n},
        {"replicas": now_n, "from": down_to},
    )
    return await run.execute(
        "scale_down",
        back,
        platform,
        evidence=evidence,
        describe=done_text(back.action, back.params),
        verify=p99_since,
        settle_s=15.0,
        window_s=verify_window_s,
    )


class ScaleUp(BaseModel):
    """The last scale-up this project made on the target."""

    model_config = ConfigDict(frozen=True)

    from_replicas: int
    to_replicas: int
    age_s: float


def decide_scale_down(
    replicas: int, p99_s: float, last_up: ScaleUp | None, policy: Policy
) -> int | None:
    """Scale back to where we started only after the Policy cool-down, and only while P99 is
    comfortably (under 60 % of warn) fine; never below what we found."""
    if last_up is None or replicas <= last_up.from_replicas:
        return None
    if last_up.age_s < policy.scale_down_cooldown_s:
        return None
    if p99_s > 0.6 * policy.threshold("p99_latency_s").warn:
        return None
    return last_up.from_replicas
