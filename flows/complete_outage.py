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

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
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
