"""Runbook §1 "High Error Rate (>1%)": LLM → fallback model; integration → status pages;
database → connection pool; bad deploy or persistent > 5 % → rollback (approval)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, LangSmith, Railway, StatusPages
from blocks.policy import Policy
from flows.acts import Platform, done_text
from flows.database_connections import database_connections
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from runbook.domain import Status, classify
from runbook.errors import RunbookError
from runbook.plan import MODEL_VARIABLE, ActionName, ActSpec, model_switch, spec
from tasks import app_metrics, langsmith, railway, status_pages
from tasks.postgres import get_pg_connections

Cause = Literal["none", "llm", "integration", "database", "bad-deploy", "unknown"]
Act = Literal["none", "switch_model", "notify", "check_database", "rollback", "escalate"]

_PATTERNS = {
    "llm": re.compile(r"\bllm\b|openai|\bmodel\b|rate.?limit|\b429\b|overloaded", re.I),
    "integration": re.compile(r"integration|shopify|gorgias", re.I),
    "database": re.compile(
        r"database|postgres|psycopg|connection pool|pool exhausted|"
        r"connection refused|too many connections",
        re.I,
    ),
}


def error_cause(message: str) -> str:
    """llm | integration | database | application, from one error message."""
    for cause, pattern in _PATTERNS.items():
        if pattern.search(message):
            return cause
    return "application"


class ErrorSignals(BaseModel):
    """Everything §1's decision needs, as observed: raw facts; decide() derives the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_5m_pct: float
    rate_1h_pct: float
    rate_recent_pct: float  # over the Policy's recent window: is it still happening?
    causes: dict[str, int]  # error count by cause over the recent window
    degraded_integrations: tuple[str, ...] = ()  # shopify / gorgias pages not operational
    db_connections_pct: float | None = None
    current_model: str | None = None
    fallback_model: str = "gpt-4o-mini"
    deployments: tuple[railway.Deployment, ...] = ()  # the service's, newest first
    live_deployment: str | None = None
    deploy_error_lines: int = 0  # errors logged by the live deployment
    observed_at: datetime | None = None  # when these were read (ages are relative to it)
    target: str = "railway:api"  # where acts go (the Railway service)

    @property
    def deploy_age_min(self) -> float | None:
        """How long the live deployment has been live (None: unknown)."""
        live = next((d for d in self.deployments if d.id == self.live_deployment), None)
        if live is None or self.observed_at is None:
            return None
        return (self.observed_at - live.created_at).total_seconds() / 60

    @property
    def rollback_to(self) -> str | None:
        """The last known good deployment to roll back to (None: there is none)."""
        if not self.live_deployment:
            return None
        good = railway.last_known_good(self.deployments, self.live_deployment)
        return good.id if good else None


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    cause: Cause
    severity: Status
    act: Act
    why: str
    spec: ActSpec | None = None  # the change to make, when `act` is one


# the acts that change the platform, and the executor each one is (flows/acts.py); the other
# acts are handled in the flow body without touching the platform
ACT_ACTIONS: dict[str, ActionName] = {
    "switch_model": ActionName.SWITCH_MODEL,
    "rollback": ActionName.ROLLBACK_DEPLOYMENT,
}
OTHER_ACTS = frozenset({"none", "notify", "check_database", "escalate"})


def decide(s: ErrorSignals, policy: Policy) -> Decision:
    """All of §1's branching, as a pure function; a changing act comes with its spec."""
    decision = _decide(s, policy)
    if decision.act == "switch_model":
        change = model_switch(policy, s.target, decision.why, s.fallback_model, s.current_model)
        return decision.model_copy(update={"spec": change})
    if decision.act == "rollback" and s.rollback_to:
        params = {"deployment_id": s.rollback_to, "from_deployment": s.live_deployment}
        change = spec(policy, ActionName.ROLLBACK_DEPLOYMENT, s.target, decision.why, params)
        return decision.model_copy(update={"spec": change})
    return decision


def verify_errors(rate_pct: float, warn_pct: float, after: str) -> tuple[bool, str]:
    """§1's verify verdict on the error rate observed again after the act (pure)."""
    return rate_pct <= warn_pct, f"error rate {rate_pct:.2f} % since the {after}"


def _decide(s: ErrorSignals, policy: Policy) -> Decision:
    limit = policy.threshold("error_rate_pct")
    severity = classify(s.rate_5m_pct, limit.warn, limit.critical)
    rate = (
        f"error rate {s.rate_recent_pct:.1f} % now, {s.rate_5m_pct:.1f} % (5 min),"
        f" {s.rate_1h_pct:.1f} % (1 h)"
    )
    if severity is Status.OK:
        return Decision(
            cause="none",
            severity=severity,
            act="none",
            why=f"{rate}: under the {limit.warn} % warn threshold",
        )
    if s.rate_recent_pct <= limit.warn:
        return Decision(
            cause="none",
            severity=severity,
            act="none",
            why=f"{rate}: no longer happening, nothing to fix",
        )
    total = sum(s.causes.values())
    top, top_n = Counter(s.causes).most_common(1)[0] if total else ("application", 0)
    dominant = top if total and top_n / total >= 0.5 else "unknown"
    over_rollback = s.rate_recent_pct > policy.rollback_error_rate_pct

    if dominant == "llm":
        if s.current_model == s.fallback_model:
            return Decision(
                cause="llm",
                severity=severity,
                act="escalate",
                why=f"{rate}, LLM errors while already on the fallback model",
            )
        return Decision(
            cause="llm",
            severity=severity,
            act="switch_model",
            why=f"{rate}, {top_n} of {total} errors are LLM errors",
        )
    if dominant == "integration" or (s.degraded_integrations and dominant != "application"):
        pages = ", ".join(s.degraded_integrations) or "no status page shows it yet"
        return Decision(
            cause="integration",
            severity=severity,
            act="notify",
            why=f"{rate}, integration errors; degraded: {pages}",
        )
    db_limit = policy.threshold("db_connections_pct")
    if dominant == "database" or (
        s.db_connections_pct is not None and s.db_connections_pct > db_limit.critical
    ):
        return Decision(
            cause="database",
            severity=severity,
            act="check_database",
            why=f"{rate}, database errors (connections {s.db_connections_pct} %)",
        )
    recent_deploy = s.deploy_age_min is not None and s.deploy_age_min <= 60
    if dominant == "application" and recent_deploy and s.deploy_error_lines and over_rollback:
        if s.rollback_to is None:
            return Decision(
                cause="bad-deploy",
                severity=severity,
                act="escalate",
                why=f"{rate} since a deploy, but no deployment to roll back to",
            )
        return Decision(
            cause="bad-deploy",
            severity=severity,
            act="rollback",
            why=f"{rate} > {policy.rollback_error_rate_pct} %, application errors from the "
            f"deployment live for {s.deploy_age_min:.0f} min",
        )
    persistent = over_rollback and s.rate_5m_pct > policy.rollback_error_rate_pct
    if persistent and s.rollback_to is not None:
        return Decision(
            cause="unknown",
            severity=severity,
            act="rollback",
            why=f"{rate}: persistent above {policy.rollback_error_rate_pct} %",
        )
    return Decision(
        cause="unknown", severity=severity, act="escalate", why=f"{rate}, cause unclear"
    )


async def observe(
    db: AppDatabase, ls: LangSmith, rw: Railway, pages: StatusPages, policy: Policy
) -> tuple[ErrorSignals, dict[str, Any]]:
    """§1's diagnosis, concurrently: app DB, LangSmith, Railway, status pages, DB pool."""

    async def safe(coro: Any) -> Any:
        try:
            return await coro
        except RunbookError:
            return None

    async def deployments_and_log_errors() -> tuple[Any, int]:
        # The live deployment's logs need its id: chained here, so the read runs alongside the
        # rest of the diagnosis instead of after it.
        deps = await safe(railway.get_deployments(rw))
        if deps is None or not deps.current_id:
            return deps, 0
        logs = await safe(railway.get_deployment_logs(rw, deps.current_id))
        lines = logs.lines if logs else ()
        return deps, sum(1 for x in lines if error_cause(x.message) == "application")

    recent = policy.recent_window_s
    (
        r5,
        r1h,
        rnow,
        by_cause,
        dist,
        traces,
        (deps, error_lines),
        model,
        conns,
        *page_states,
    ) = await asyncio.gather(
        app_metrics.get_error_rate(db, 300),
        app_metrics.get_error_rate(db, 3600),
        app_metrics.get_error_rate(db, recent),
        app_metrics.get_error_causes(db, recent),
        app_metrics.get_error_distribution(db, 3600),  # the runbook's own query
        safe(langsmith.get_trace_errors(ls, 300)),
        deployments_and_log_errors(),
        safe(railway.get_variable(rw, MODEL_VARIABLE)),
        get_pg_connections(db, policy),
        *(safe(status_pages.get_status_page(pages, name)) for name in ("shopify", "gorgias")),
    )
    causes = by_cause.by_cause
    degraded = tuple(p.page for p in page_states if p is not None and not p.operational)
    signals = ErrorSignals(
        rate_5m_pct=r5.rate_pct,
        rate_1h_pct=r1h.rate_pct,
        rate_recent_pct=rnow.rate_pct,
        causes=dict(causes),
        degraded_integrations=degraded,
        db_connections_pct=conns.details.get("percent"),
        current_model=model.value if model else None,
        deployments=deps.items if deps else (),
        live_deployment=deps.current_id if deps else None,
        deploy_error_lines=error_lines,
        observed_at=datetime.now(UTC),
        target=f"railway:{rw.service_id}",
    )
    evidence = {
        "error_rate_now_pct": rnow.rate_pct,
        "error_rate_5m_pct": r5.rate_pct,
        "error_rate_1h_pct": r1h.rate_pct,
        "errors_by_intent": dist.by_intent,
        "errors_by_cause": dict(causes),
        "langsmith_errored_5m": traces.errored if traces else "unavailable",
        "degraded_integrations": list(degraded),
        "live_deployment": deps.current_id if deps else None,
    }
    return signals, evidence


async def error_rate_since(
    db: AppDatabase, since: float, recent_s: int, floor_s: int = 10
) -> float:
    """The error rate over traffic after the act, at most the last `recent_s` seconds: the
    symptom must be gone *now* (a transition's first errors do not count forever)."""
    elapsed = int(asyncio.get_running_loop().time() - since)
    window = max(floor_s, min(elapsed, recent_s))
    return (await app_metrics.get_error_rate(db, window)).rate_pct


@flow(
    name="high-error-rate",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def high_error_rate(
    incident_id: str | None = None, dry_run: bool = False, verify_window_s: float = 90.0
) -> RemediationResult:
    """Runbook §1 High Error Rate: find the cause (LLM, integration, database, bad deploy),
    apply the runbook's remedy (fallback model, or rollback after approval), verify, report."""
    run = await IncidentRun.start("high-error-rate", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    db, ls, rw, pages, llm_model = await asyncio.gather(
        AppDatabase.resolve(),
        LangSmith.resolve(),
        Railway.resolve(),
        StatusPages.resolve(),
        _fallback_model(),
    )
    signals, evidence = await observe(db, ls, rw, pages, policy)
    signals = signals.model_copy(update={"fallback_model": llm_model})
    await run.seen(
        f"error rate {signals.rate_5m_pct} % (5 min); causes {signals.causes}", **evidence
    )
    decision = decide(signals, policy)
    await run.decided(f"{decision.cause} → {decision.act}", decision.why)
    warn = policy.threshold("error_rate_pct").warn

    if decision.spec is not None:
        change = decision.spec
        after = "rollback" if change.action is ActionName.ROLLBACK_DEPLOYMENT else "switch"

        async def verify(acted_at: float) -> tuple[bool, str]:
            rate = await error_rate_since(db, acted_at, policy.recent_window_s)
            return verify_errors(rate, warn, after)

        async def still_bad() -> bool:  # re-checked after an approval
            recent = await app_metrics.get_error_rate(db, policy.recent_window_s)
            return recent.rate_pct > warn

        return await run.execute(
            decision.act,
            change,
            Platform(railway=rw),
            evidence=evidence,
            describe=done_text(change.action, change.params),
            verify=verify,
            still_needed=still_bad,
            window_s=verify_window_s,
        )

    if decision.act == "check_database":
        sub = await database_connections(run.incident_id, dry_run=dry_run)
        return await run.finish(
            f"{decision.act} → {sub.decision}",
            decision.why,
            verified=sub.verified,
            summary=f"§4 database-connections: {sub.summary}",
        )
    if decision.act == "notify":
        await run.note("notified", decision.why)
        return await run.finish(
            decision.act,
            decision.why,
            verified=None,
            summary="No platform change: the integration is down on the provider's side"
            f" ({decision.why}).",
        )
    if decision.act == "escalate":
        await run.escalate(f"High error rate needs a human: {decision.why}")
    return await run.finish(
        decision.act, decision.why, verified=decision.act == "none" or None, summary=decision.why
    )


async def _fallback_model() -> str:
    from blocks.llm import LlmProbe

    return (await LlmProbe.resolve()).fallback_model
