"""Runbook §4 "Database Connection Issues": check the database (RDS status, connections, pool),
raise the connection pool, restart the API, or fail over the database (approval)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, Policy, Railway, Rds, SupportApi
from flows.acts import Platform, done_text
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from runbook.domain import Status
from runbook.errors import RunbookError
from runbook.plan import POOL_VARIABLE, ActionName, ActSpec, spec
from tasks import app_metrics, railway, rds, support_api
from tasks.postgres import get_pg_connections

Problem = Literal[
    "none", "unreachable", "pool-exhausted", "rds-unavailable", "railway-db-down", "unclear"
]
Act = Literal["none", "raise_pool", "restart_api", "failover_db", "escalate"]


class DbSignals(BaseModel):
    model_config = ConfigDict(frozen=True)

    ready_ok: bool
    ready_summary: str = ""
    db_errors_now: int = 0
    refused: bool = False  # "connection refused" in recent database errors
    pool_exhausted: bool = False  # "pool exhausted" in recent database errors
    pool_size: int | None = None
    rds_status: str | None = None  # None: not on RDS / not readable
    multi_az: bool = False
    railway_db_status: str | None = None  # a Railway-hosted Postgres: its live deployment status
    app_connections: int | None = None  # the app's own sessions on its database
    replicas: int | None = None  # API replicas, each with its own pool

    @property
    def app_pool_pct(self) -> float | None:
        """Key Metrics "DB connections": the app's sessions as % of its pools."""
        return app_pool_pct(self.app_connections, self.pool_size, self.replicas)

    target: str = "railway:api"  # the Railway service (pool size, restarts)
    rds_instance: str = "support-agent-db"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    problem: Problem
    act: Act
    why: str
    pool_to: int | None = None
    spec: ActSpec | None = None  # the change to make, when `act` is one


# the acts that change the platform (flows/acts.py); the others only tell people
ACT_ACTIONS: dict[str, ActionName] = {
    "raise_pool": ActionName.SET_POOL_SIZE,
    "restart_api": ActionName.REDEPLOY_SERVICE,
    "failover_db": ActionName.FAILOVER_DB,
}
OTHER_ACTS = frozenset({"none", "escalate"})


def app_pool_pct(
    app_connections: int | None, pool_size: int | None, replicas: int | None
) -> float | None:
    """Connections as a share of the app's pool (DATABASE_POOL_SIZE times replicas), the runbook's
    Key Metrics measure; None when a part is unknown."""
    if app_connections is None or not pool_size or not replicas:
        return None
    return round(100.0 * app_connections / (pool_size * replicas), 1)


def decide(s: DbSignals, policy: Policy) -> Decision:
    """All of §4's branching, as a pure function; a changing act comes with its spec."""
    d = _decide(s, policy)
    if d.act == "raise_pool" and d.pool_to:
        undo = {POOL_VARIABLE: str(s.pool_size)} if s.pool_size else None
        params = {POOL_VARIABLE: str(d.pool_to)}
        change = spec(policy, ActionName.SET_POOL_SIZE, s.target, d.why, params, undo)
        return d.model_copy(update={"spec": change})
    if d.act == "restart_api":
        change = spec(policy, ActionName.REDEPLOY_SERVICE, s.target, d.why)
        return d.model_copy(update={"spec": change})
    if d.act == "failover_db":
        where = f"rds:{s.rds_instance}"
        params = {"instance": s.rds_instance}
        change = spec(policy, ActionName.FAILOVER_DB, where, d.why, params)
        return d.model_copy(update={"spec": change})
    return d


def verify_database(
    ready_ok: bool, ready_summary: str, db_errors: int, window_s: int
) -> tuple[bool, str]:
    """§4's verify verdict on the database path observed again after the act (pure)."""
    return ready_ok and db_errors == 0, (
        f"/health/ready {ready_summary}; {db_errors} database errors in the last {window_s} s"
    )


def _decide(s: DbSignals, policy: Policy) -> Decision:
    seen = f"/health/ready: {s.ready_summary or 'ok'}; {s.db_errors_now} database errors now"
    pct = s.app_pool_pct
    if pct is not None:
        seen += f"; app pool {pct:.0f} % used"
    limit = policy.threshold("db_connections_pct")
    saturated = pct is not None and pct >= limit.critical
    if s.ready_ok and s.db_errors_now == 0 and not saturated:
        return Decision(problem="none", act="none", why=f"{seen}: the database path is healthy")
    if s.railway_db_status in {"CRASHED", "FAILED", "REMOVED"}:
        return Decision(
            problem="railway-db-down",
            act="escalate",
            why=f"{seen}; the Railway Postgres service is {s.railway_db_status}:"
            " platform-side, page a human (Railway support)",
        )
    if s.rds_status not in (None, "available"):
        return Decision(
            problem="rds-unavailable",
            act="escalate",
            why=f"{seen}; RDS instance is {s.rds_status}: AWS-side, page a human",
        )
    if s.refused:
        if s.multi_az:
            return Decision(
                problem="unreachable",
                act="failover_db",
                why=f"{seen}; connections refused: fail over to the standby",
            )
        return Decision(
            problem="unreachable",
            act="escalate",
            why=f"{seen}; connections refused and no Multi-AZ standby",
        )
    if s.pool_exhausted or saturated:
        size = s.pool_size or 0
        if size < policy.max_pool_size:
            return Decision(
                problem="pool-exhausted",
                act="raise_pool",
                pool_to=policy.max_pool_size,
                why=f"{seen}; pool of {size} exhausted: raise to {policy.max_pool_size}",
            )
        return Decision(
            problem="pool-exhausted",
            act="restart_api",
            why=f"{seen}; pool already {size} (cap): restart the API to reset it",
        )
    return Decision(problem="unclear", act="escalate", why=f"{seen}; cause unclear")


async def _none() -> None:
    return None


async def observe(
    db: AppDatabase, api: SupportApi, rw: Railway, aws: Rds, policy: Policy
) -> tuple[DbSignals, dict[str, Any]]:
    async def maybe(coro: Any) -> Any:
        try:
            return await coro
        except RunbookError:
            return None

    recent = policy.recent_window_s
    pg_service = rw.postgres_service_id
    (
        (ready, causes, exhausted, refused),
        (pool, instance, conns, api_si, pg_si),
    ) = await asyncio.gather(
        asyncio.gather(
            support_api.get_api_readiness(api),
            maybe(app_metrics.get_error_causes(db, recent)),
            maybe(app_metrics.count_errors_matching(db, "pool exhausted", recent)),
            maybe(app_metrics.count_errors_matching(db, "connection refused", recent)),
        ),
        asyncio.gather(
            maybe(railway.get_variable(rw, POOL_VARIABLE)),
            maybe(rds.get_db_instance(aws)),
            get_pg_connections(db, policy),
            maybe(railway.get_service_instance(rw)),
            maybe(railway.get_service_instance(rw, pg_service)) if pg_service else _none(),
        ),
    )
    signals = DbSignals(
        ready_ok=ready.status is Status.OK,
        ready_summary=ready.summary,
        db_errors_now=causes.by_cause.get("database", 0) if causes else 0,
        # our own connection is refused too, or the API says its database check fails while
        # we cannot read the app database: the database path is down
        refused=bool(refused)
        or (conns.status is Status.UNAVAILABLE and "refused" in conns.summary.lower())
        or ("database" in ready.summary and causes is None),
        pool_exhausted=bool(exhausted),
        pool_size=int(pool.value) if pool and pool.value and pool.value.isdigit() else None,
        rds_status=instance.status if instance else None,
        multi_az=bool(instance and instance.multi_az),
        railway_db_status=pg_si.latest_status if pg_si else None,
        app_connections=conns.details.get("app_connections"),
        replicas=api_si.num_replicas if api_si else None,
        target=f"railway:{rw.service_id}",
        rds_instance=aws.instance_id,
    )
    evidence = {
        "ready": ready.summary,
        "db_errors_now": signals.db_errors_now,
        "pool_size": signals.pool_size,
        "rds_status": signals.rds_status,
        "connections": conns.summary,
        "app_pool_pct": signals.app_pool_pct,
        "railway_db_status": signals.railway_db_status,
    }
    return signals, evidence


@flow(
    name="database-connections",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def database_connections(
    incident_id: str | None = None, dry_run: bool = False, verify_window_s: float = 60.0
) -> RemediationResult:
    """Runbook §4 Database Connection Issues: RDS status, connections and pool; raise the pool
    (safe), restart the API or fail over the database (both after approval); verify readiness."""
    run = await IncidentRun.start("database-connections", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    db, api, rw, aws = await asyncio.gather(
        AppDatabase.resolve(), SupportApi.resolve(), Railway.resolve(), Rds.resolve()
    )
    signals, evidence = await observe(db, api, rw, aws, policy)
    await run.seen(f"database path: {evidence}", **evidence)
    decision = decide(signals, policy)
    await run.decided(f"{decision.problem} → {decision.act}", decision.why)

    async def healthy_since(acted_at: float) -> tuple[bool, str]:
        elapsed = int(asyncio.get_running_loop().time() - acted_at)
        window = max(5, min(elapsed, 15))  # healthy *now*, after the change settled
        ready = await support_api.get_api_readiness(api)
        causes = await app_metrics.get_error_causes(db, window)
        errors = causes.by_cause.get("database", 0)
        return verify_database(ready.status is Status.OK, ready.summary, errors, window)

    async def still_broken() -> bool:  # re-checked after an approval, as decide() saw it
        ready = await support_api.get_api_readiness(api)
        if ready.status is not Status.OK:
            return True
        try:
            causes = await app_metrics.get_error_causes(db, policy.recent_window_s)
        except RunbookError:  # the app database cannot be read: still broken
            return True
        return causes.by_cause.get("database", 0) > 0

    if decision.spec is not None:
        change = decision.spec
        return await run.execute(
            decision.act,
            change,
            Platform(railway=rw, rds=aws),
            evidence=evidence,
            describe=done_text(change.action, change.params),
            verify=healthy_since,
            still_needed=still_broken,
            window_s=verify_window_s,
            settle_s=15.0 if change.action is ActionName.FAILOVER_DB else 10.0,
        )
    if decision.act == "escalate":
        await run.escalate(f"Database connections need a human: {decision.why}")
    return await run.finish(
        decision.act,
        decision.why,
        verified=True if decision.act == "none" else None,
        summary=decision.why,
    )
