"""Runbook §5 "Complete Outage": all health checks failing, no API responses.

Check everything at once (every health endpoint, DNS of the API host, the platform's own view
and Railway's status page, the app database and Redis), decide which of dns-failure |
platform-incident | bad-deploy | dependency-down | unknown it is, then: a bad deploy → an
emergency rollback (two approvers; an optional break-glass lets one suffice after a wait);
a dependency → §4 as a subflow; DNS or a platform incident → no platform change, a drafted
message for Railway support. Every case tells customers (the status page) and pages with the
evidence; when every endpoint is back for the verify window the status page and PagerDuty are
resolved.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, AppRedis, Dns, Railway, StatusPages, SupportApi
from blocks.policy import Policy
from blocks.statuspage import CustomerStatusPage
from flows.acts import Platform, done_text
from flows.database_connections import database_connections
from flows.escalation import request_support
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page, page_failed_run, resolve_page
from runbook import incidents, opsdb
from runbook.domain import Status
from runbook.errors import RunbookError
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from tasks import dns, railway, redis, status_pages, support_api
from tasks.postgres import get_pg_connections
from tasks.railway import Deployment, last_known_good

Cause = Literal[
    "none", "dns-failure", "platform-incident", "bad-deploy", "dependency-down", "unknown"
]
Act = Literal["none", "rollback", "check_database", "escalate"]

# the acts that change the platform (flows/acts.py); the others tell people (always also the
# customer status page and a page)
ACT_ACTIONS: dict[str, ActionName] = {"rollback": ActionName.ROLLBACK_DEPLOYMENT}
OTHER_ACTS = frozenset({"none", "check_database", "escalate"})
BROKEN = frozenset({"CRASHED", "FAILED"})
DEPLOY_WINDOW = timedelta(minutes=30)  # "the outage began with the live deployment"


class OutageSignals(BaseModel):
    """What §5 observed: raw facts; decide() derives the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    health_ok: bool
    ready_ok: bool
    health_summary: str = ""
    dns_outcome: str = "ok"  # ok | nxdomain | noanswer | servfail | timeout | error
    dns_summary: str = ""
    deployments: tuple[Deployment, ...] = ()
    live_deployment: str | None = None
    live_status: str | None = None  # the platform's view of the live deployment
    railway_indicator: str = "none"  # Railway's own status page
    railway_incidents: tuple[str, ...] = ()
    db_ok: bool = True
    redis_ok: bool = True
    outage_since: datetime | None = None  # when the outage was first seen (the incident)
    observed_at: datetime | None = None
    target: str = "railway:api"

    @property
    def rollback_to(self) -> str | None:
        if not self.live_deployment:
            return None
        good = last_known_good(self.deployments, self.live_deployment)
        return good.id if good else None

    @property
    def began_with_live_deployment(self) -> bool:
        """The live deployment went live shortly before the outage began (or crashed)."""
        live = next((d for d in self.deployments if d.id == self.live_deployment), None)
        if live is None:
            return False
        since = self.outage_since or self.observed_at
        if since is None:
            return False
        return since - DEPLOY_WINDOW <= live.created_at <= since + timedelta(minutes=1)


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    cause: Cause
    act: Act
    why: str
    spec: ActSpec | None = None


def decide(s: OutageSignals, policy: PolicyRules) -> Decision:
    """All of §5's branching, as a pure function."""
    seen = f"{s.health_summary or 'health checks'}; DNS {s.dns_outcome}"
    if s.health_ok and s.ready_ok:
        return Decision(cause="none", act="none", why=f"{seen}: the API answers")
    if s.dns_outcome != "ok":
        return Decision(
            cause="dns-failure",
            act="escalate",
            why=f"{seen} ({s.dns_summary}): no platform change can fix DNS",
        )
    if s.railway_indicator in {"major", "critical"} or s.railway_incidents:
        incidents = "; ".join(s.railway_incidents) or s.railway_indicator
        return Decision(
            cause="platform-incident",
            act="escalate",
            why=f"{seen}; Railway reports an incident ({incidents}): contact Railway support",
        )
    crashed = s.live_status in BROKEN
    if crashed or s.began_with_live_deployment:
        how = f"the live deployment is {s.live_status}" if crashed else "it began with a deploy"
        if s.rollback_to is None:
            return Decision(
                cause="bad-deploy",
                act="escalate",
                why=f"{seen}; {how}, but there is no deployment to roll back to",
            )
        why = f"{seen}; {how}: emergency rollback to {s.rollback_to}"
        change = spec(
            policy,
            ActionName.ROLLBACK_DEPLOYMENT,
            s.target,
            why,
            {"deployment_id": s.rollback_to, "from_deployment": s.live_deployment},
            two_person=True,
            break_glass=True,
        )
        return Decision(cause="bad-deploy", act="rollback", why=why, spec=change)
    if not s.db_ok:
        return Decision(
            cause="dependency-down",
            act="check_database",
            why=f"{seen}; the app database does not answer: §4 database connections",
        )
    if not s.redis_ok:
        return Decision(
            cause="dependency-down",
            act="escalate",
            why=f"{seen}; Redis does not answer: page a human",
        )
    return Decision(cause="unknown", act="escalate", why=f"{seen}; cause unclear")


def verify_outage(health_ok: bool, ready_ok: bool, summary: str) -> tuple[bool, str]:
    """§5's verify verdict: every health endpoint answers again (pure)."""
    return health_ok and ready_ok, f"health endpoints: {summary}"


CUSTOMER_TEXT = (
    "We are investigating an outage of the support assistant: conversations may not be answered."
    " We will post an update as soon as we know more."
)
RESOLVED_TEXT = "The support assistant is answering again. We are monitoring the service."
IDENTIFIED_TEXT = {
    "bad-deploy": "We identified a faulty release and are rolling it back.",
    "dependency-down": "We identified a problem with a database the assistant relies on.",
    "dns-failure": "We identified a DNS problem and are working with our provider.",
    "platform-incident": "Our hosting provider reports an incident; we are working with them.",
}


async def _maybe(coro: Any) -> Any:
    try:
        return await coro
    except RunbookError:
        return None


async def observe(
    api: SupportApi,
    db: AppDatabase,
    cache: AppRedis,
    rw: Railway,
    pages: StatusPages,
    resolver: Dns,
    policy: Policy,
    outage_since: datetime | None,
) -> tuple[OutageSignals, dict[str, Any]]:
    """§5's checks, all at once: health endpoints, DNS, the platform, Railway's status page,
    the app database and Redis."""
    health, ready, answer, name, deps, page_state, conns, ping = await asyncio.gather(
        support_api.get_api_health(api),
        support_api.get_api_readiness(api),
        support_api.get_api_response_time(api, policy),
        dns.get_dns_resolution(resolver),
        _maybe(railway.get_deployments(rw)),
        _maybe(status_pages.get_status_page(pages, "railway"))
        if "railway" in pages.pages
        else _maybe(_nothing()),
        get_pg_connections(db, policy),
        redis.get_redis_ping(cache),
    )
    live = next((d for d in deps.items if d.id == deps.current_id), None) if deps else None
    summary = f"/health {health.summary}; /health/ready {ready.summary}; {answer.summary}"
    signals = OutageSignals(
        health_ok=health.status is Status.OK,
        ready_ok=ready.status is Status.OK,
        health_summary=summary,
        dns_outcome=name.outcome,
        dns_summary=name.summary,
        deployments=deps.items if deps else (),
        live_deployment=deps.current_id if deps else None,
        live_status=live.status if live else None,
        railway_indicator=page_state.indicator if page_state else "unknown",
        railway_incidents=tuple(page_state.unresolved_incidents) if page_state else (),
        db_ok=conns.status is not Status.UNAVAILABLE,
        redis_ok=ping.status is not Status.UNAVAILABLE,
        outage_since=outage_since,
        observed_at=datetime.now(UTC),
        target=f"railway:{rw.service_id}",
    )
    evidence = {
        "health": summary,
        "dns": name.summary,
        "live_deployment": f"{signals.live_deployment} ({signals.live_status})",
        "railway_status": signals.railway_indicator,
        "database": conns.summary,
        "redis": ping.summary,
    }
    return signals, evidence


async def _nothing() -> None:
    return None


@flow(
    name="complete-outage",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def complete_outage(
    incident_id: str | None = None, dry_run: bool = False, verify_window_s: float = 60.0
) -> RemediationResult:
    """Runbook §5 Complete Outage: DNS, the platform, Railway's status, the database and Redis
    checked at once; a bad deploy is rolled back after two approvals; customers are told on the
    status page and the on-call engineer is paged in every case; resolved when health is back."""
    run = await IncidentRun.start("complete-outage", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    (api, db, cache), (rw, pages, resolver, status_page) = await asyncio.gather(
        asyncio.gather(SupportApi.resolve(), AppDatabase.resolve(), AppRedis.resolve()),
        asyncio.gather(
            Railway.resolve(), StatusPages.resolve(), Dns.resolve(), CustomerStatusPage.resolve()
        ),
    )
    since = None
    if incident_id:
        async with await opsdb.connect() as conn:
            found = await incidents.get_incident(conn, incident_id)
        since = found.opened_at if found else None
    signals, evidence = await observe(api, db, cache, rw, pages, resolver, policy, since)
    await run.seen(signals.health_summary, **evidence)
    decision = decide(signals, policy)
    await run.decided(f"{decision.cause} → {decision.act}", decision.why)
    if decision.act == "none":
        return await run.finish("none", decision.why, verified=True, summary=decision.why)

    platform = Platform(railway=rw, status_page=status_page)
    status_id = await _tell_customers(run, platform, evidence)
    if status_id and decision.cause in IDENTIFIED_TEXT and status_page.page_id:
        await run.act_spec(
            spec(
                policy,
                ActionName.UPDATE_STATUS_INCIDENT,
                f"statuspage:{status_page.page_id}",
                f"the cause is identified: {decision.cause}",
                {
                    "status_incident": status_id,
                    "status": "identified",
                    "body": IDENTIFIED_TEXT[decision.cause],
                },
            ),
            platform,
            evidence,
        )
    await page(
        f"Complete outage ({decision.cause}): {decision.why}",
        {"incident": run.incident_id, "flow": "complete-outage", **evidence},
        severity="P1",
    )

    async def health_back(acted_at: float) -> tuple[bool, str]:
        health, ready = await asyncio.gather(
            support_api.get_api_health(api), support_api.get_api_readiness(api)
        )
        return verify_outage(
            health.status is Status.OK,
            ready.status is Status.OK,
            f"/health {health.summary}; /health/ready {ready.summary}",
        )

    async def still_down() -> bool:  # re-checked after the approvals
        return not (await health_back(0.0))[0]

    if decision.spec is not None:
        change = decision.spec
        return await run.execute(
            decision.act,
            change,
            platform,
            evidence=evidence,
            describe=done_text(change.action, change.params),
            verify=health_back,
            still_needed=still_down,
            window_s=verify_window_s,
            when_verified=lambda: _all_clear(run, platform, status_id, evidence),
        )
    if decision.act == "check_database":
        sub = await database_connections(run.incident_id, dry_run=dry_run)
        ok, detail = await health_back(0.0)
        if ok:
            await _all_clear(run, platform, status_id, evidence)
        return await run.finish(
            f"{decision.act} → {sub.decision}",
            decision.why,
            verified=ok,
            summary=f"§4 database-connections: {sub.summary}; {detail}",
        )
    role = (
        "railway-support" if decision.cause in {"dns-failure", "platform-incident"} else "on-call"
    )
    line = await request_support(
        run.incident_id, role, f"API outage: {decision.cause}", decision.why, evidence
    )
    await run.escalate(f"Complete outage needs a human ({decision.cause}): {line}")
    return await run.finish(
        decision.act,
        decision.why,
        verified=None,
        summary=f"No platform change ({decision.cause}); customers told; {line}",
    )


async def _tell_customers(run: IncidentRun, platform: Platform, evidence: dict[str, Any]) -> str:
    """Open the customer status page incident (exactly once per incident); its id, or ""."""
    if platform.status_page is None or not platform.status_page.page_id:
        await run.note("status page", "no customer status page configured: customers not told")
        return ""
    name = "Support assistant outage"
    opened = await run.act_spec(
        spec(
            run.policy,
            ActionName.OPEN_STATUS_INCIDENT,
            f"statuspage:{platform.status_page.page_id}",
            "tell customers (runbook §5 step 5)",
            {"name": name, "body": CUSTOMER_TEXT},
        ),
        platform,
        evidence,
    )
    return str((opened.outcome or {}).get("status_incident") or "")


async def _all_clear(
    run: IncidentRun, platform: Platform, status_id: str, evidence: dict[str, Any]
) -> None:
    """Health is back for the verify window: resolve the status page and PagerDuty."""
    if status_id and platform.status_page is not None:
        await run.act_spec(
            spec(
                run.policy,
                ActionName.RESOLVE_STATUS_INCIDENT,
                f"statuspage:{platform.status_page.page_id}",
                "every health endpoint is back",
                {"status_incident": status_id, "body": RESOLVED_TEXT},
            ),
            platform,
            evidence,
        )
    if not run.dry_run and await resolve_page(run.incident_id):
        await run.note("resolved", "PagerDuty alert resolved")
