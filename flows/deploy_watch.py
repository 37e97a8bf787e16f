"""Runbook "Deployment Procedures" → Standard Deployment, "Monitor deployment"
(`railway logs --service api -f`): what the `deploy-watch` flow (flows/deployment.py) observes,
decides and verifies, and what every deployment procedure shares (each environment's blocks,
the rollback's verify).

Follow one deployment to SUCCESS / FAILED / CRASHED (each status change logged and noted in the
timeline; the wait is bounded), read its error logs, then compare the window after it went live
with the window before (served by the previous deployment). `decide()`:

* a **regression** — error rate after > max(2 x baseline, Policy `error_rate_pct.warn`), or,
  when the baseline was already unhealthy, > max(1.5 x baseline, `error_rate_pct.critical`)
  (a deploy that makes a bad hour worse is not excused by it), from at
  least `MIN_ERRORS` errors (one stray error in a quiet window is noise), or P99
  after > Policy `p99_latency_s.warn` and > 1.5 x the baseline P99 (baseline unknown: > critical)
  — proposes a rollback to the last known good deployment (destructive: approval);
* a **FAILED / CRASHED** deployment pages; it also proposes the rollback when the live deployment
  is not the previous good one (a build that failed leaves the previous one serving: page only);
* fewer than `MIN_REPLIES` replies after it went live is inconclusive; a healthy deploy ends
  green with nothing done.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, LangSmith, Railway
from blocks.policy import Policy
from flows.acts import Platform, executor
from flows.incident import IncidentRun, VerifySince
from flows.notifications import page
from runbook import redact
from runbook.errors import ConfigurationError, NotAuthorized, PermanentError, RunbookError
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from tasks import app_metrics, langsmith, railway
from tasks.railway import Deployment, last_known_good

Environment = Literal["production", "staging"]
Verdict = Literal["healthy", "regressed", "broken", "not-finished", "not-live", "inconclusive"]
Act = Literal["none", "rollback", "escalate"]

ACT_ACTIONS: dict[str, ActionName] = {"rollback": ActionName.ROLLBACK_DEPLOYMENT}
OTHER_ACTS = frozenset({"none", "escalate"})
LIVE = frozenset({"SUCCESS", "SLEEPING"})
BROKEN = frozenset({"FAILED", "CRASHED"})
FINAL = LIVE | BROKEN | {"REMOVED", "SKIPPED"}
MIN_REPLIES = 20  # fewer replies after the deploy than this: too little traffic to judge
MIN_ERRORS = 5  # fewer errors than this is no error-rate regression, whatever the rate


class WatchSignals(BaseModel):
    """What the watch saw: raw facts; decide() derives the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment_id: str
    status: str
    finished: bool = True  # reached a final status within the bound
    waited_s: float = 0.0
    deployments: tuple[Deployment, ...] = ()  # the service's, newest first
    live_deployment: str | None = None
    error_lines: int = 0  # `railway logs` @level:error of the watched deployment
    replies_before: int = 0  # the window before it went live (the previous deployment)
    errors_before: int = 0
    replies_after: int = 0  # the window after it went live
    errors_after: int = 0
    p99_before_s: float | None = None  # None: unknown (it was live before the watch began)
    p99_after_s: float | None = None
    target: str = "railway:api"

    @property
    def rate_before_pct(self) -> float:
        return 100.0 * self.errors_before / self.replies_before if self.replies_before else 0.0

    @property
    def rate_after_pct(self) -> float:
        return 100.0 * self.errors_after / self.replies_after if self.replies_after else 0.0

    def _get(self, deployment_id: str | None) -> Deployment | None:
        return next((d for d in self.deployments if d.id == deployment_id), None)

    @property
    def previous_good(self) -> Deployment | None:
        """The newest SUCCESS deployment older than the watched one (what served before it)."""
        watched = self._get(self.deployment_id)
        older = [
            d
            for d in self.deployments
            if d.id != self.deployment_id
            and d.status in LIVE
            and (watched is None or d.created_at < watched.created_at)
        ]
        return max(older, key=lambda d: d.created_at, default=None)

    @property
    def live_is_newer(self) -> bool:
        """Another, newer deployment replaced the watched one."""
        watched, live = self._get(self.deployment_id), self._get(self.live_deployment)
        return bool(watched and live and live.created_at > watched.created_at)

    @property
    def rollback_to(self) -> str | None:
        if not self.live_deployment:
            return None
        good = last_known_good(self.deployments, self.live_deployment)
        return good.id if good else None


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    act: Act
    why: str
    page: bool = False  # tell the on-call engineer now (a broken deployment)
    spec: ActSpec | None = None


def decide(s: WatchSignals, policy: PolicyRules) -> Decision:
    """All of the watch's branching, as a pure function; a rollback comes with its spec."""
    decision = _decide(s, policy)
    if decision.act == "rollback" and s.rollback_to and s.live_deployment:
        params = {"deployment_id": s.rollback_to, "from_deployment": s.live_deployment}
        change = spec(policy, ActionName.ROLLBACK_DEPLOYMENT, s.target, decision.why, params)
        return decision.model_copy(update={"spec": change})
    return decision


def regressions(s: WatchSignals, policy: PolicyRules) -> list[str]:
    """What got worse after the deploy (empty: nothing), by the module docstring's rule."""
    found = []
    errors, p99 = policy.threshold("error_rate_pct"), policy.threshold("p99_latency_s")
    error_line = min(
        max(2 * s.rate_before_pct, errors.warn),
        max(1.5 * s.rate_before_pct, errors.critical),
    )
    if s.rate_after_pct > error_line and s.errors_after >= MIN_ERRORS:
        found.append(
            f"error rate {s.rate_after_pct:.2f} % after vs {s.rate_before_pct:.2f} % before"
            f" (> {error_line:.2f} %)"
        )
    after, before = s.p99_after_s, s.p99_before_s
    if after is not None and after > p99.warn:
        if before is None and after > p99.critical:
            found.append(f"P99 {after:.1f} s > {p99.critical:g} s (no baseline)")
        elif before is not None and after > 1.5 * before:
            found.append(f"P99 {after:.1f} s vs {before:.1f} s before (> 1.5 x)")
    return found


def _decide(s: WatchSignals, policy: PolicyRules) -> Decision:
    dep, live = s.deployment_id, s.live_deployment
    if not s.finished:
        why = f"deployment {dep} is still {s.status} after {s.waited_s:.0f} s"
        return Decision(verdict="not-finished", act="escalate", page=True, why=why)
    logs = f" ({s.error_lines} error lines in its logs)" if s.error_lines else ""
    if s.status in BROKEN:
        seen = f"deployment {dep} {s.status}{logs}"
        good = s.previous_good
        if live is None or s.live_is_newer:
            why = f"{seen}; {live or 'no deployment'} is live now: nothing to roll back from it"
            return Decision(verdict="broken", act="escalate", page=True, why=why)
        if good is not None and live == good.id:
            why = f"{seen}; the previous good deployment {live} still serves: nothing to roll back"
            return Decision(verdict="broken", act="escalate", page=True, why=why)
        if s.rollback_to is None:
            why = f"{seen}; {live} is live and there is no deployment to roll back to"
            return Decision(verdict="broken", act="escalate", page=True, why=why)
        why = f"{seen}; {live} is live: roll back to {s.rollback_to}"
        return Decision(verdict="broken", act="rollback", page=True, why=why)
    if s.status not in LIVE or live != dep:
        why = f"deployment {dep} {s.status}, but {live or 'none'} is live: nothing to judge"
        return Decision(verdict="not-live", act="none", why=why)
    if s.replies_after < MIN_REPLIES:
        why = f"only {s.replies_after} replies since {dep} went live: too little traffic to judge"
        return Decision(verdict="inconclusive", act="none", why=why)
    found = regressions(s, policy)
    if not found:
        why = (
            f"{dep} is healthy: error rate {s.rate_after_pct:.2f} % (before"
            f" {s.rate_before_pct:.2f} %), P99 {_secs(s.p99_after_s)} (before"
            f" {_secs(s.p99_before_s)}){logs}"
        )
        return Decision(verdict="healthy", act="none", why=why)
    seen = f"{dep} regressed: {'; '.join(found)}{logs}"
    if s.rollback_to is None:
        why = f"{seen}; no deployment to roll back to"
        return Decision(verdict="regressed", act="escalate", page=True, why=why)
    why = f"{seen}: roll back to {s.rollback_to}"
    return Decision(verdict="regressed", act="rollback", why=why)


def _secs(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} s"


def verify_rollback(
    rate_pct: float | None, errors: int, warn_pct: float, live_ok: bool, to: str
) -> tuple[bool, str]:
    """The rollback's verify verdict (pure): `to` is live and the error rate since is under warn
    (fewer than `MIN_ERRORS` errors are noise, not a failed rollback)."""
    if not live_ok:
        return False, f"{to} is not live"
    if rate_pct is None:
        return True, f"{to} is live (no traffic since the rollback to judge errors by)"
    detail = (
        f"{to} is live; error rate {rate_pct:.2f} % ({errors} errors) since the rollback"
        f" (warn {warn_pct:g} %)"
    )
    return rate_pct <= warn_pct or errors < MIN_ERRORS, detail


def rollback_verifier(
    rw: Railway, db: AppDatabase, policy: PolicyRules, to: str, bad: str | None
) -> VerifySince:
    """verify(acted_at): `to` is live (the executor's own reconcile reads it) and traffic since
    the act is under the warn rate."""
    is_live = executor(ActionName.ROLLBACK_DEPLOYMENT).reconcile
    if is_live is None:  # the executor table lost its reconcile: never verify blind
        raise ConfigurationError("rollback_deployment has no reconcile to verify with")

    async def verify(acted_at: float) -> tuple[bool, str]:
        elapsed = asyncio.get_running_loop().time() - acted_at
        window = max(5, min(int(elapsed), policy.recent_window_s))
        since = datetime.now(UTC) - timedelta(seconds=elapsed)
        live_ok, rate = await asyncio.gather(
            is_live(Platform(railway=rw), {"deployment_id": to, "from_deployment": bad}),
            app_metrics.get_error_rate(db, window, since=since),
        )
        warn = policy.threshold("error_rate_pct").warn
        measured = rate.rate_pct if rate.replies else None
        return verify_rollback(measured, rate.errors, warn, live_ok, to)

    return verify


async def use_environment(run: IncidentRun, environment: Environment | None) -> tuple[Railway, str]:
    """The Railway service of `environment` and the acts' target; the run then acts under that
    environment's Policy. Each environment is its own block documents named after it (None: the
    process's own, RUNBOOK_ENVIRONMENT); without a document a block is built from the
    RUNBOOK_* settings — so in the sandbox both environments are the same fake."""
    if environment is None:
        rw = await Railway.resolve()
        return rw, f"railway:{rw.service_id}"
    rw, policy = await asyncio.gather(Railway.resolve(environment), Policy.resolve(environment))
    for problem in policy.problems:  # the environment's document refused: its floor is used
        await page(
            f"Runbook Policy block {environment!r} refused, running on the floor: {problem}",
            {"key": f"policy-refused:{environment}", "flow": run.flow},
        )
    run.policy = policy
    suffix = "" if environment == "production" else f"@{environment}"
    return rw, f"railway:{rw.service_id}{suffix}"


async def find_deployment(rw: Railway, deployment_id: str) -> Deployment | None:
    """`deployment(id)`, None when Railway does not know it."""
    try:
        return await railway.get_deployment(rw, deployment_id)
    except NotAuthorized:
        raise
    except PermanentError as exc:
        if "not found" in str(exc).lower():
            return None
        raise


async def _maybe(coro: Any) -> Any:
    try:
        return await coro
    except RunbookError:
        return None


class Followed(BaseModel):
    status: str
    finished: bool
    waited_s: float
    live_at: datetime  # when it went live (seen by the watch, else its creation)
    p99_before_s: float | None = None  # P99 over the window before it went live, when seen


async def follow(
    run: IncidentRun, rw: Railway, ls: LangSmith, dep: Deployment, timeout_s: int, window_s: int
) -> Followed:
    """Poll the deployment until a final status or `timeout_s`: each change is logged (INFO)
    and noted in the timeline. Polls call the task's function (one task run per poll would
    flood the UI) every 1 s at first, then up to 5 s."""
    log, loop = get_run_logger(), asyncio.get_running_loop()
    start, status, live_at, p99 = loop.time(), dep.status, dep.created_at, None
    await run.note("watching", f"deployment {dep.id} (commit {dep.commit}) is {status}")
    while status not in FINAL and (waited := loop.time() - start) < timeout_s:
        await asyncio.sleep(min(5.0, 1.0 + waited / 20, max(0.1, timeout_s - waited)))
        try:
            now = (await railway.get_deployment.fn(rw, dep.id)).status
        except RunbookError as exc:  # a read that failed: keep watching until the bound
            log.warning("deployment %s: status not read (%s)", dep.id, exc)
            continue
        if now != status:
            change = f"deployment {dep.id}: {status} → {now} after {loop.time() - start:.0f} s"
            log.info(change)
            await run.note("progress", change)
            status = now
        if status in LIVE | {"CRASHED"}:
            live_at = datetime.now(UTC)
            baseline = await _maybe(langsmith.get_trace_latency(ls, window_s))
            p99 = baseline.p99_s if baseline and baseline.runs else None
    waited = loop.time() - start
    return Followed(
        status=status, finished=status in FINAL, waited_s=waited, live_at=live_at, p99_before_s=p99
    )


async def observe(
    rw: Railway,
    db: AppDatabase,
    ls: LangSmith,
    dep: Deployment,
    seen: Followed,
    window_s: int,
    target: str,
) -> tuple[WatchSignals, dict[str, Any]]:
    """Error logs, the deployment list, and the windows before/after it went live. The app
    database counts replies *after* a moment, so [a, b] = after(a) - after(b)."""
    now = datetime.now(UTC)
    live, end = seen.live_at, seen.live_at + timedelta(seconds=window_s)

    async def after(moment: datetime) -> tuple[int, int]:
        if moment >= now:
            return 0, 0
        got = await app_metrics.get_error_rate(
            db, int((now - moment).total_seconds()) + 2, since=moment
        )
        return got.replies, got.errors

    (r0, e0), (r1, e1), (r2, e2), deps, logs, p99 = await asyncio.gather(
        after(live - timedelta(seconds=window_s)),
        after(live),
        after(end),
        railway.get_deployments(rw),
        _maybe(railway.get_deployment_logs(rw, dep.id, "@level:error")),
        _maybe(langsmith.get_trace_latency(ls, window_s)),
    )
    lines = logs.lines if logs else ()
    signals = WatchSignals(
        deployment_id=dep.id,
        status=seen.status,
        finished=seen.finished,
        waited_s=round(seen.waited_s, 1),
        deployments=deps.items,
        live_deployment=deps.current_id,
        error_lines=len(lines),
        replies_before=max(0, r0 - r1),
        errors_before=max(0, e0 - e1),
        replies_after=max(0, r1 - r2),
        errors_after=max(0, e1 - e2),
        p99_before_s=seen.p99_before_s,
        p99_after_s=p99.p99_s if p99 and p99.runs else None,
        target=target,
    )
    evidence = {
        "deployment": f"{dep.id} (commit {dep.commit}) {seen.status}",
        "live_deployment": deps.current_id,
        "error_rate_before_pct": round(signals.rate_before_pct, 2),
        "error_rate_after_pct": round(signals.rate_after_pct, 2),
        "replies_before_after": f"{signals.replies_before} / {signals.replies_after}",
        "p99_before_after_s": f"{_secs(signals.p99_before_s)} / {_secs(signals.p99_after_s)}",
        "error_log_lines": len(lines),
        "error_log_samples": [redact.mask(x.message)[:160] for x in lines[:2]],
    }
    return signals, evidence


async def watched_deployment(rw: Railway, deployment_id: str | None) -> Deployment:
    """The deployment to watch (None: the service's newest); a clear error when it is not one
    of this service's."""
    if deployment_id is None:
        listing = await railway.get_deployments(rw, first=1)
        if not listing.items:
            raise PermanentError(f"service {rw.service_id} has no deployment to watch")
        return listing.items[0]
    found = await find_deployment(rw, deployment_id)
    if found is None:
        raise PermanentError(f"deployment_id {deployment_id!r}: Railway has no such deployment")
    if found.service_id and found.service_id != rw.service_id:
        raise PermanentError(
            f"deployment_id {deployment_id!r} belongs to service {found.service_id},"
            f" not {rw.service_id}: not watched"
        )
    return found
