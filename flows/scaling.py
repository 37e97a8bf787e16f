"""Runbook "Scaling Procedures": horizontal (`railway scale api --replicas N`) and vertical (CPU
and memory per replica) scaling of the API on Railway. The database's instance class is
flows/rds_resize.py.

Operators start these flows (`runbook run scale-replicas --param replicas=4`, the Prefect UI's
Run form). Each is the usual shape: parameters checked against their bounds by Prefect (a bad
one fails the run before anything is read, in one line naming it) → observe → a pure decide()
(the Policy's caps; the need of the last hour's traffic) → the act through the safety core →
a pure verify verdict → finish. A request decide() refuses changes nothing and ends `refused`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from prefect import Flow
from prefect.exceptions import ParameterTypeError
from pydantic import BaseModel, ConfigDict, Field

from blocks import LangSmith, Railway, SupportApi
from flows.acts import Platform, done_text
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from runbook.domain import Status
from runbook.errors import RunbookError
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from runbook.safety import ActOutcome
from tasks import langsmith, railway, support_api

P = ParamSpec("P")
R = TypeVar("R")

Act = Literal["none", "scale_up", "scale_down", "set_limits", "refuse"]
# the acts that change the platform (flows/acts.py); the others change nothing
ACT_ACTIONS: dict[str, ActionName] = {
    "scale_up": ActionName.SCALE_REPLICAS,
    "scale_down": ActionName.SCALE_REPLICAS,
    "set_limits": ActionName.SET_SERVICE_LIMITS,
}
OTHER_ACTS = frozenset({"none", "refuse"})
RAILWAY_MAX_REPLICAS = 50  # Railway's own limit (APIS.md); the Policy's cap is at most this
NEED_WINDOW_S = 3600  # "the last hour's traffic"


# -- operator-started flows -------------------------------------------------------------------
class OperatorFlow(Flow[P, R]):
    """A flow an operator starts with parameters. A parameter outside its bounds fails the run
    before anything runs, with one line naming it, the value given and what is allowed (Prefect
    spreads it over several lines, and the failure page keeps only the first). `with_options`
    returns a plain Flow: do not use it on these."""

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate_parameters(parameters)
        except ParameterTypeError as exc:
            raise ParameterTypeError(bad_parameters(self.name, str(exc), parameters)) from None


def operator_flow(**options: Any) -> Callable[[Callable[P, R]], OperatorFlow[P, R]]:
    """`@flow(...)` for an `OperatorFlow` (the same options)."""

    def wrap(fn: Callable[P, R]) -> OperatorFlow[P, R]:
        return OperatorFlow(fn=fn, **options)

    return wrap


def bad_parameters(flow: str, message: str, given: dict[str, Any]) -> str:
    """Prefect's "Flow run received invalid parameters:\\n - name: why" as one line, with the
    values given: "scale-replicas: bad parameter replicas=-1 (Input should be ≥ 1)"."""
    problems = []
    for line in message.splitlines()[1:] or [message]:
        name, sep, why = line.strip().removeprefix("- ").partition(": ")
        if sep and name in given:
            problems.append(f"{name}={given[name]!r:.60} ({why})")
        else:
            problems.append(line.strip().removeprefix("- "))
    word = "parameter" if len(problems) == 1 else "parameters"
    return f"{flow}: bad {word} " + "; ".join(problems)


async def refuse(
    run: IncidentRun, action: ActionName, target: str, decision: str, why: str
) -> RemediationResult:
    """A request refused before any act (over a cap, below the need, an unknown class): nothing
    changed. The timeline and Slack say why, the result reads `refused` (the CLI exits non-zero).
    No page: the operator who asked is the one to tell, and the run tells them."""
    await run.note("refused", why)
    run.outcomes.append(
        ActOutcome(
            key=f"{run.incident_id}:{action.value}:{target}",
            action=action.value,
            target=target,
            status="refused",
            detail=why,
        )
    )
    return await run.finish(
        decision,
        why,
        verified=None,
        summary=f"NOT done — {action.value} on {target} refused: {why}",
    )


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    spec: ActSpec | None = None  # the change to make, when `act` is one


# -- horizontal: replicas -------------------------------------------------------------------
class ReplicaSignals(BaseModel):
    """What scale-replicas saw: the request, the service, the last hour's latency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: int
    current: int
    p99_hour_s: float | None = None  # None: not read (no scale-down) or not readable
    traces_hour: int = 0
    target: str = "railway:api"


def replicas_needed(current: int, p99_s: float, warn_s: float) -> int:
    """The replicas the last hour's traffic needs: with `current` replicas it saw P99 `p99_s`;
    latency taken as inversely proportional to replicas (the model §2 sizes scale-ups with),
    the fewest that keep P99 at or under the warn threshold. At least 1."""
    if warn_s <= 0:
        return current
    return max(1, math.ceil(current * p99_s / warn_s))


def decide_replicas(s: ReplicaSignals, policy: PolicyRules) -> Decision:
    """Scale to the requested count: over the Policy cap → refused; up → safe; down → only to
    what the last hour's traffic needs (refused when that cannot be told)."""
    cap, want, now = policy.max_replicas, s.requested, s.current
    if want > cap:
        return Decision(
            act="refuse",
            why=f"replicas={want} is over the Policy cap max_replicas={cap}; not scaled",
        )
    if want == now:
        return Decision(act="none", why=f"the service already runs {now} replicas")
    params = {"replicas": want, "from": now}
    undo = {"replicas": now, "from": want}
    if want > now:
        why = f"scale up {now} → {want} replicas (operator request, cap {cap})"
        change = spec(policy, ActionName.SCALE_REPLICAS, s.target, why, params, undo)
        return Decision(act="scale_up", why=why, spec=change)
    warn = policy.threshold("p99_latency_s").warn
    if s.p99_hour_s is None or s.traces_hour == 0:
        return Decision(
            act="refuse",
            why=f"replicas={want}: cannot tell what the last hour's traffic needs (no trace"
            " latency from LangSmith), so no scale-down",
        )
    need = replicas_needed(now, s.p99_hour_s, warn)
    seen = (
        f"P99 {s.p99_hour_s:.1f} s over the last hour ({s.traces_hour} traces) with {now}"
        f" replicas needs {need} for P99 ≤ {warn:g} s"
    )
    if want < need:
        return Decision(act="refuse", why=f"replicas={want} is below what traffic needs: {seen}")
    why = f"scale down {now} → {want} replicas (operator request; {seen})"
    change = spec(policy, ActionName.SCALE_REPLICAS, s.target, why, params, undo)
    return Decision(act="scale_down", why=why, spec=change)


def verify_replicas(reported: int, wanted: int) -> tuple[bool, str]:
    """scale-replicas' verify verdict: the service instance reports the count (pure)."""
    return reported == wanted, f"the service reports {reported} replicas (wanted {wanted})"


async def _maybe(coro: Any) -> Any:
    try:
        return await coro
    except RunbookError:
        return None


@operator_flow(
    name="scale-replicas",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def scale_replicas(
    replicas: Annotated[int, Field(ge=1, le=RAILWAY_MAX_REPLICAS)],
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: Annotated[float, Field(ge=5, le=900)] = 30.0,
) -> RemediationResult:
    """Runbook Scaling Procedures → Horizontal Scaling: `railway scale api --replicas N`.

    Up to the Policy's max_replicas (more is refused). Scaling up is safe and needs no approval.
    Scaling down is refused below what the last hour's traffic needs: with the current replicas
    the hour's P99 (LangSmith root traces) was p, so it needs ceil(current * p / P99 warn) —
    latency taken as inversely proportional to replicas, as §2 sizes its scale-ups; no
    readable traces → no scale-down. Verified when the service reports the new count (undone
    if it does not).

    Args:
        replicas: Replicas of the API, 1-50 (the Policy's max_replicas caps it)
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        verify_window_s: How long the new count may take to show
    """
    run = await IncidentRun.start("scale-replicas", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    rw = await Railway.resolve()
    target = f"railway:{rw.service_id}"
    instance = await railway.get_service_instance(rw)
    latency = None
    if replicas < instance.num_replicas:  # only a scale-down needs the hour's traffic
        ls = await LangSmith.resolve()
        warn = policy.threshold("p99_latency_s").warn
        latency = await _maybe(langsmith.get_trace_latency(ls, NEED_WINDOW_S, warn))
    signals = ReplicaSignals(
        requested=replicas,
        current=instance.num_replicas,
        p99_hour_s=latency.p99_s if latency else None,
        traces_hour=latency.runs if latency else 0,
        target=target,
    )
    evidence: dict[str, Any] = {
        "replicas_now": instance.num_replicas,
        "replicas_requested": replicas,
        "max_replicas": policy.max_replicas,
    }
    if latency is not None:
        evidence.update(p99_last_hour_s=latency.p99_s, traces_last_hour=latency.runs)
    await run.seen(f"{instance.num_replicas} replicas; {replicas} requested", **evidence)
    decision = decide_replicas(signals, policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        return await refuse(run, ActionName.SCALE_REPLICAS, target, "refuse", decision.why)
    if decision.spec is None:
        return await run.finish("none", decision.why, verified=True, summary=decision.why)

    async def reports(acted_at: float) -> tuple[bool, str]:
        now = await railway.get_service_instance(rw)
        return verify_replicas(now.num_replicas, replicas)

    change = decision.spec
    return await run.execute(
        decision.act,
        change,
        Platform(railway=rw),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=reports,
        window_s=verify_window_s,
        settle_s=2.0,
    )


# -- vertical: CPU and memory per replica ----------------------------------------------------
class LimitSignals(BaseModel):
    """What scale-vertical saw: the request and the service now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vcpus: float
    memory_gb: float
    replicas: int | None = None
    health_ok: bool = True
    health_summary: str = ""
    target: str = "railway:api"


def decide_limits(s: LimitSignals, policy: PolicyRules) -> Decision:
    """Set the limits when within the Policy's max_vcpus / max_memory_gb; it redeploys the
    service, so the Policy classes it destructive (approval)."""
    over = [
        f"{name}={value:g} is over the Policy cap {cap_name}={cap:g}"
        for name, value, cap_name, cap in (
            ("vcpus", s.vcpus, "max_vcpus", policy.max_vcpus),
            ("memory_gb", s.memory_gb, "max_memory_gb", policy.max_memory_gb),
        )
        if value > cap
    ]
    if over:
        return Decision(act="refuse", why="; ".join(over) + "; limits not changed")
    why = (
        f"set {s.vcpus:g} vCPU and {s.memory_gb:g} GB per replica (operator request, caps"
        f" {policy.max_vcpus:g} vCPU / {policy.max_memory_gb:g} GB): the service redeploys"
    )
    params = {"vcpus": s.vcpus, "memory_gb": s.memory_gb}
    change = spec(policy, ActionName.SET_SERVICE_LIMITS, s.target, why, params)
    return Decision(act="set_limits", why=why, spec=change)


def verify_health(health_ok: bool, ready_ok: bool, summary: str) -> tuple[bool, str]:
    """scale-vertical's verify verdict: the API is healthy again after the redeploy (pure)."""
    return health_ok and ready_ok, f"after the redeploy: {summary}"


@operator_flow(
    name="scale-vertical",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def scale_vertical(
    vcpus: Annotated[float, Field(gt=0, le=64)],  # the bounds of the Policy's max_vcpus
    memory_gb: Annotated[float, Field(gt=0, le=256)],
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: Annotated[float, Field(ge=5, le=900)] = 60.0,
) -> RemediationResult:
    """Runbook Scaling Procedures → Vertical Scaling: CPU and memory per replica of the API.

    Within the Policy's max_vcpus and max_memory_gb (more is refused). Railway redeploys the
    service with the new limits, so this is destructive: it waits for an approval. Verified
    when /health and /health/ready answer OK again after the redeploy.

    Args:
        vcpus: vCPUs per replica (the Policy's max_vcpus caps it)
        memory_gb: Memory in GB per replica (the Policy's max_memory_gb caps it)
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        verify_window_s: How long the API may take to be healthy after the redeploy
    """
    run = await IncidentRun.start("scale-vertical", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    rw, api = await asyncio.gather(Railway.resolve(), SupportApi.resolve())
    target = f"railway:{rw.service_id}"
    instance, health = await asyncio.gather(
        _maybe(railway.get_service_instance(rw)), support_api.get_api_health(api)
    )
    signals = LimitSignals(
        vcpus=vcpus,
        memory_gb=memory_gb,
        replicas=instance.num_replicas if instance else None,
        health_ok=health.status is Status.OK,
        health_summary=health.summary,
        target=target,
    )
    evidence: dict[str, Any] = {
        "requested": f"{vcpus:g} vCPU, {memory_gb:g} GB per replica",
        "policy caps": f"{policy.max_vcpus:g} vCPU, {policy.max_memory_gb:g} GB",
        "replicas (each restarts)": signals.replicas,
        "health now": health.summary,
        "impact": "Railway redeploys the service with the new limits",
    }
    await run.seen(f"{vcpus:g} vCPU / {memory_gb:g} GB requested", **evidence)
    decision = decide_limits(signals, policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse" or decision.spec is None:
        return await refuse(run, ActionName.SET_SERVICE_LIMITS, target, "refuse", decision.why)

    async def healthy_again(acted_at: float) -> tuple[bool, str]:
        health, ready = await asyncio.gather(
            support_api.get_api_health(api), support_api.get_api_readiness(api)
        )
        return verify_health(
            health.status is Status.OK,
            ready.status is Status.OK,
            f"/health {health.summary}; /health/ready {ready.summary}",
        )

    change = decision.spec
    return await run.execute(
        decision.act,
        change,
        Platform(railway=rw),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=healthy_again,
        window_s=verify_window_s,
        settle_s=5.0,
    )
