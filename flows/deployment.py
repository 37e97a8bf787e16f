"""Runbook "Deployment Procedures" as three operator flows (`runbook run FLOW --param k=v`, the
UI's Run form; other flows call them as subflows):

* `deploy-watch`  — Standard Deployment, "Monitor deployment": follow a deployment, compare it
  with the one before, roll back a regression (rules: flows/deploy_watch.py);
* `manual-deploy` — "Deploy specific commit" to production or staging (`serviceInstanceDeployV2`
  with the commit; destructive: approval unless that environment's Policy auto-approves), then
  `deploy-watch` on the new deployment;
* `rollback`      — "Immediate rollback" (to the last known good deployment) or "Rollback to
  specific deployment"; refuses a target Railway cannot roll back to or of another service.
  The runbook's `alembic downgrade -1` is not part of it (a migration downgrade is its own act).

Parameters are checked on the signature (a bad one fails the run before any check, in one line
naming the parameter and what it allows: `operator_flow`); a request refused (a target Railway
cannot roll back to, another service's deployment, a deploy still on its way) ends `refused`
with nothing changed, like the scaling flows. `decide_deploy()` / `decide_rollback()` are pure.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from prefect import get_run_logger
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from blocks import AppDatabase, LangSmith, Railway
from flows.acts import Platform, done_text
from flows.deploy_watch import (
    LIVE,
    Environment,
    decide,
    find_deployment,
    follow,
    observe,
    rollback_verifier,
    use_environment,
    watched_deployment,
)
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page, page_failed_run
from flows.scaling import operator_flow, refuse
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from tasks import railway
from tasks.railway import Deployment, last_known_good

Act = Literal["none", "deploy", "rollback", "refuse"]
ACT_ACTIONS: dict[str, ActionName] = {
    "deploy": ActionName.DEPLOY_COMMIT,
    "rollback": ActionName.ROLLBACK_DEPLOYMENT,
}
OTHER_ACTS = frozenset({"none", "refuse"})
PENDING = frozenset({"QUEUED", "INITIALIZING", "WAITING", "BUILDING", "DEPLOYING"})
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


def _commit_sha(value: object) -> object:
    if isinstance(value, str):
        value = value.strip().lower()
        if not _SHA.fullmatch(value):
            raise ValueError("commit_sha must be a git commit: 7 to 40 hex characters (0-9, a-f)")
    return value


def _deployment_id(value: object) -> object:
    if isinstance(value, str) and not _DEPLOYMENT_ID.fullmatch(value):
        raise ValueError(
            "deployment_id must be a Railway deployment id: 3 to 64 letters, digits, '-' or '_'"
            " (e.g. dep-0004-1a2b3c4d)"
        )
    return value


# the Field gives the UI form its pattern; the validator (it runs first) the one-line message
CommitSha = Annotated[
    str,
    Field(pattern=_SHA.pattern, description="the git commit to deploy (7-40 hex characters)"),
    BeforeValidator(_commit_sha),
]
DeploymentId = Annotated[
    str,
    Field(pattern=_DEPLOYMENT_ID.pattern, description="a Railway deployment id"),
    BeforeValidator(_deployment_id),
]
WindowS = Annotated[
    int, Field(ge=10, le=3600, description="seconds compared after (and before) it went live")
]
TimeoutS = Annotated[int, Field(ge=10, le=3600, description="longest wait for a final status")]
VerifyWindowS = Annotated[
    float, Field(ge=5, le=900, description="seconds for the rollback to help before escalating")
]


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    spec: ActSpec | None = None


class DeploySignals(BaseModel):
    """What manual-deploy saw before deploying."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit_sha: str
    environment: Environment
    live_deployment: str | None = None
    live_commit: str | None = None
    in_progress: tuple[str, ...] = ()  # "id STATUS" of deployments still on their way
    target: str = "railway:api"


def decide_deploy(s: DeploySignals, policy: PolicyRules) -> Decision:
    """Deploy the commit unless it is live already or another deploy is still on its way."""
    where = f"{s.environment} ({s.target})"
    if s.live_commit and s.live_commit.lower().startswith(s.commit_sha):
        why = f"commit {s.commit_sha} is already live on {where} as {s.live_deployment}"
        return Decision(act="none", why=why)
    if s.in_progress:
        why = f"a deploy is still on its way on {where}: {', '.join(s.in_progress)}; wait for it"
        return Decision(act="refuse", why=why)
    why = f"deploy commit {s.commit_sha} to {where} (live: {s.live_deployment})"
    params = {"commit_sha": s.commit_sha, "environment": s.environment}
    return Decision(
        act="deploy", why=why, spec=spec(policy, ActionName.DEPLOY_COMMIT, s.target, why, params)
    )


class RollbackSignals(BaseModel):
    """What the rollback flow saw: the service's deployments and the one asked for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: str | None = None  # None: the last known good deployment
    found: Deployment | None = None  # the requested one as Railway reports it (None: unknown)
    service_id: str
    deployments: tuple[Deployment, ...] = ()
    live_deployment: str | None = None
    target: str = "railway:api"


def decide_rollback(s: RollbackSignals, policy: PolicyRules) -> Decision:
    """Which deployment to roll back to, or why not (nothing is changed when refused)."""
    live, asked = s.live_deployment, s.requested
    if asked is None:
        good = last_known_good(s.deployments, live) if live else None
        if good is None:
            why = f"no older SUCCESS deployment of {s.service_id} that Railway can roll back to"
            return Decision(act="refuse", why=why)
        to, how = good, "immediate rollback to the last known good deployment"
    elif s.found is None:
        return Decision(act="refuse", why=f"deployment {asked} does not exist on Railway")
    elif s.found.service_id and s.found.service_id != s.service_id:
        why = f"deployment {asked} belongs to service {s.found.service_id}, not {s.service_id}"
        return Decision(act="refuse", why=why)
    elif asked == live:
        return Decision(act="refuse", why=f"deployment {asked} is the live one already")
    elif not s.found.can_rollback:
        why = f"deployment {asked} cannot be rolled back to ({s.found.status}, canRollback false)"
        return Decision(act="refuse", why=why)
    else:
        to, how = s.found, "rollback to the requested deployment"
    why = f"{how} {to.id} (commit {to.commit}) from {live}"
    params = {"deployment_id": to.id, "from_deployment": live}
    return Decision(
        act="rollback",
        why=why,
        spec=spec(policy, ActionName.ROLLBACK_DEPLOYMENT, s.target, why, params),
    )


@operator_flow(
    name="deploy-watch",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def deploy_watch(
    deployment_id: DeploymentId | None = None,
    window_s: WindowS = 300,
    incident_id: str | None = None,
    dry_run: bool = False,
    environment: Environment | None = None,
    timeout_s: TimeoutS = 900,
    verify_window_s: VerifyWindowS = 60.0,
) -> RemediationResult:
    """Deployment Procedures — monitor a deployment (default: the newest): follow it to SUCCESS,
    FAILED or CRASHED, read its error logs, compare error rate and P99 for `window_s` after it
    went live with the window before; a regression or a crashed live deployment is rolled back
    to the last known good one after approval. A healthy deploy ends green with nothing done."""
    run = await IncidentRun.start("deploy-watch", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    (rw, target), db, ls = await asyncio.gather(
        use_environment(run, environment), AppDatabase.resolve(), LangSmith.resolve()
    )
    dep = await watched_deployment(rw, deployment_id)
    seen = await follow(run, rw, ls, dep, timeout_s, window_s)
    if seen.finished and seen.status in LIVE:
        wait = (seen.live_at + timedelta(seconds=window_s) - datetime.now(UTC)).total_seconds()
        if wait > 0:
            get_run_logger().info("deployment %s is live: measuring for %.0f s", dep.id, wait)
            await asyncio.sleep(wait)
    signals, evidence = await observe(rw, db, ls, dep, seen, window_s, target)
    await run.seen(f"deployment {dep.id} {signals.status}", **evidence)
    decision = decide(signals, run.policy)
    await run.decided(f"{decision.verdict} → {decision.act}", decision.why)
    if decision.act == "escalate":  # pages, and the timeline says so
        await run.escalate(f"Deployment {dep.id} {signals.status}: {decision.why}")
    elif decision.page:  # a broken deployment: tell the on-call now; the rollback asks approval
        await page(
            f"Deployment {dep.id} {signals.status}: {decision.why}",
            {"incident": run.incident_id, "flow": run.flow, **evidence},
        )
    if decision.spec is not None:
        return await roll_back(
            run,
            decision.act,
            decision.spec,
            signals.live_deployment,
            rw,
            db,
            evidence,
            verify_window_s,
        )
    verified = True if decision.verdict == "healthy" else None if decision.act == "none" else False
    return await run.finish(decision.verdict, decision.why, verified=verified, summary=decision.why)


@operator_flow(
    name="manual-deploy",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def manual_deploy(
    commit_sha: CommitSha,
    environment: Environment = "staging",
    window_s: WindowS = 300,
    incident_id: str | None = None,
    dry_run: bool = False,
    timeout_s: TimeoutS = 900,
    verify_window_s: VerifyWindowS = 60.0,
) -> RemediationResult:
    """Deployment Procedures — deploy a specific commit to production or staging
    (`railway deploy --commit SHA`): after approval where that environment's Policy asks for
    one, then watch the new deployment (deploy-watch: a regression is rolled back)."""
    run = await IncidentRun.start("manual-deploy", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    rw, target = await use_environment(run, environment)
    listing = await railway.get_deployments(rw)
    live = next((d for d in listing.items if d.id == listing.current_id), None)
    signals = DeploySignals(
        commit_sha=commit_sha,
        environment=environment,
        live_deployment=listing.current_id,
        live_commit=live.commit if live else None,
        in_progress=tuple(f"{d.id} {d.status}" for d in listing.items if d.status in PENDING),
        target=target,
    )
    evidence: dict[str, Any] = {"environment": environment, "live_deployment": listing.current_id}
    await run.seen(f"{environment}: live {listing.current_id} (commit {signals.live_commit})")
    decision = decide_deploy(signals, run.policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        return await refuse(run, ActionName.DEPLOY_COMMIT, target, "refuse", decision.why)
    if decision.spec is None:
        return await run.finish("none", decision.why, verified=True, summary=decision.why)

    async def not_live_yet() -> bool:  # re-checked after the approval
        now = await railway.get_deployments(rw)
        current = next((d for d in now.items if d.id == now.current_id), None)
        return not (current and (current.commit or "").startswith(commit_sha))

    outcome = await run.act_spec(
        decision.spec, Platform(railway=rw), evidence, still_needed=not_live_yet
    )
    if outcome.status == "planned":
        why = f"{decision.why}; then deploy-watch on the new deployment"
        return await run.finish("deploy", why, verified=None, summary=f"would {why}")
    if outcome.status not in {"done", "already_done"}:
        if outcome.status in {"rejected", "held", "refused", "failed"} and not outcome.paged:
            await run.escalate(f"manual-deploy of {commit_sha} {outcome.status}: {outcome.detail}")
        return await run.finish(
            "deploy",
            decision.why,
            verified=None,
            summary=f"NOT done — deploy of {commit_sha} to {environment} {outcome.status}:"
            f" {outcome.detail or 'no change'}",
        )
    new_id = str((outcome.outcome or {}).get("new_deployment_id") or "")
    if not new_id:  # reconciled (the answer was lost): the newest deployment of the commit
        now = await railway.get_deployments(rw)
        new_id = next((d.id for d in now.items if d.commit == commit_sha), "")
    watch = await deploy_watch(
        deployment_id=new_id or None,
        window_s=window_s,
        incident_id=run.incident_id,
        dry_run=dry_run,
        environment=environment,
        timeout_s=timeout_s,
        verify_window_s=verify_window_s,
    )
    verified = True if watch.decision == "healthy" else None if watch.verified is None else False
    return await run.finish(
        f"deploy → {watch.decision}",
        decision.why,
        verified=verified,
        summary=f"{done_text(ActionName.DEPLOY_COMMIT, {'commit_sha': commit_sha})} to"
        f" {environment} as {new_id}; deploy-watch: {watch.summary}",
    )


@operator_flow(
    name="rollback",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def rollback(
    deployment_id: DeploymentId | None = None,
    environment: Environment | None = None,
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: VerifyWindowS = 60.0,
) -> RemediationResult:
    """Deployment Procedures — roll the API back: to the last known good deployment (no
    `deployment_id`), or to the given one. Destructive: after approval; a deployment Railway
    cannot roll back to, or of another service, is refused with nothing changed. Verified when
    the target is live and the error rate is under the Policy's warn threshold."""
    run = await IncidentRun.start("rollback", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    (rw, target), db = await asyncio.gather(
        use_environment(run, environment), AppDatabase.resolve()
    )
    listing, found = await asyncio.gather(
        railway.get_deployments(rw), _requested(rw, deployment_id)
    )
    signals = RollbackSignals(
        requested=deployment_id,
        found=found,
        service_id=rw.service_id,
        deployments=listing.items,
        live_deployment=listing.current_id,
        target=target,
    )
    evidence: dict[str, Any] = {"live_deployment": listing.current_id, "requested": deployment_id}
    await run.seen(f"live {listing.current_id}; asked for {deployment_id or 'last known good'}")
    decision = decide_rollback(signals, run.policy)
    await run.decided(decision.act, decision.why)
    if decision.spec is None:
        return await refuse(run, ActionName.ROLLBACK_DEPLOYMENT, target, "refuse", decision.why)
    return await roll_back(
        run,
        decision.act,
        decision.spec,
        signals.live_deployment,
        rw,
        db,
        evidence,
        verify_window_s,
    )


async def roll_back(
    run: IncidentRun,
    act: str,
    change: ActSpec,
    bad: str | None,
    rw: Railway,
    db: AppDatabase,
    evidence: dict[str, Any],
    verify_window_s: float,
) -> RemediationResult:
    """The rollback through the safety core (deploy-watch's and rollback's): re-checked after
    the approval (nobody moved the live deployment meanwhile), then verified."""

    async def still_live() -> bool:
        return (await railway.get_deployments(rw)).current_id == bad

    return await run.execute(
        act,
        change,
        Platform(railway=rw),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=rollback_verifier(rw, db, run.policy, change.params["deployment_id"], bad),
        still_needed=still_live,
        window_s=verify_window_s,
        settle_s=min(5.0, verify_window_s),
    )


async def _requested(rw: Railway, deployment_id: str | None) -> Deployment | None:
    return await find_deployment(rw, deployment_id) if deployment_id else None
