"""Runbook §4 "Database Connection Issues": check the database (RDS status, connections, pool),
raise the connection pool, restart the API, or fail over the database (approval)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, Policy, Railway, Rds, SupportApi
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from flows.platform_acts import set_variable, variable_is
from runbook.domain import Status
from runbook.errors import PermanentError, RunbookError
from tasks import app_metrics, railway, rds, support_api
from tasks.postgres import get_pg_connections

Problem = Literal["none", "unreachable", "pool-exhausted", "rds-unavailable", "unclear"]
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


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    problem: Problem
    act: Act
    why: str
    pool_to: int | None = None


def decide(s: DbSignals, policy: Policy) -> Decision:
    """All of §4's branching, as a pure function."""
    seen = f"/health/ready: {s.ready_summary or 'ok'}; {s.db_errors_now} database errors now"
    if s.ready_ok and s.db_errors_now == 0:
        return Decision(problem="none", act="none", why=f"{seen}: the database path is healthy")
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
    if s.pool_exhausted:
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


async def observe(
    db: AppDatabase, api: SupportApi, rw: Railway, aws: Rds, policy: Policy
) -> tuple[DbSignals, dict[str, Any]]:
    async def maybe(coro: Any) -> Any:
        try:
            return await coro
        except RunbookError:
            return None

    recent = policy.recent_window_s
    (ready, causes, exhausted, refused), (pool, instance, conns) = await asyncio.gather(
        asyncio.gather(
            support_api.get_api_readiness(api),
            maybe(app_metrics.get_error_causes(db, recent)),
            maybe(app_metrics.count_errors_matching(db, "pool exhausted", recent)),
            maybe(app_metrics.count_errors_matching(db, "connection refused", recent)),
        ),
        asyncio.gather(
            maybe(railway.get_variable(rw, "DATABASE_POOL_SIZE")),
            maybe(rds.get_db_instance(aws)),
            get_pg_connections(db, policy),
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
    )
    evidence = {
        "ready": ready.summary,
        "db_errors_now": signals.db_errors_now,
        "pool_size": signals.pool_size,
        "rds_status": signals.rds_status,
        "connections": conns.summary,
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
    target = f"railway:{rw.service_id}"

    async def healthy_since(acted_at: float) -> tuple[bool, str]:
        elapsed = int(asyncio.get_running_loop().time() - acted_at)
        window = max(5, min(elapsed, 15))  # healthy *now*, after the change settled
        ready = await support_api.get_api_readiness(api)
        causes = await app_metrics.get_error_causes(db, window)
        errors = causes.by_cause.get("database", 0)
        return ready.status is Status.OK and errors == 0, (
            f"/health/ready {ready.summary}; {errors} database errors in the last {window} s"
        )

    if decision.act == "raise_pool" and decision.pool_to:
        size, before = str(decision.pool_to), str(signals.pool_size or "")
        return await run.remediate(
            decision.act,
            decision.why,
            run.request(
                "set_pool_size",
                target,
                params={"DATABASE_POOL_SIZE": size},
                reason=decision.why,
                evidence=evidence,
                reversible=bool(before),
            ),
            act=lambda: set_variable(rw, "DATABASE_POOL_SIZE", size),
            reconcile=lambda _: variable_is(rw, "DATABASE_POOL_SIZE", size),
            verify=healthy_since,
            undo=(lambda: set_variable(rw, "DATABASE_POOL_SIZE", before)) if before else None,
            window_s=verify_window_s,
            describe=f"DATABASE_POOL_SIZE → {size}",
        )
    if decision.act == "restart_api":

        async def redeploy() -> dict[str, Any]:
            live = await railway.get_service_instance(rw)
            if not live.latest_deployment_id:  # a precondition, recorded as a failed act
                raise PermanentError("railway: no live deployment to redeploy")
            return (await railway.redeploy_service(rw, live.latest_deployment_id)).model_dump()

        return await run.remediate(
            decision.act,
            decision.why,
            run.request("redeploy_service", target, reason=decision.why, evidence=evidence),
            act=redeploy,
            verify=healthy_since,
            window_s=verify_window_s,
            describe="API redeployed to reset its connections",
        )
    if decision.act == "failover_db":
        return await run.remediate(
            decision.act,
            decision.why,
            run.request(
                "failover_db", f"rds:{aws.instance_id}", reason=decision.why, evidence=evidence
            ),
            act=lambda: _failover(aws),
            verify=healthy_since,
            window_s=verify_window_s,
            settle_s=15.0,
            describe=f"RDS {aws.instance_id} failed over to its standby",
        )
    if decision.act == "escalate":
        await run.escalate(f"Database connections need a human: {decision.why}")
    return await run.finish(
        decision.act,
        decision.why,
        verified=True if decision.act == "none" else None,
        summary=decision.why,
    )


async def _failover(aws: Rds) -> dict[str, Any]:
    return (await rds.failover_db(aws)).model_dump()
