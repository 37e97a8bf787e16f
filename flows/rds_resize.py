"""Runbook "Scaling Procedures" → Database Scaling: `aws rds modify-db-instance
--db-instance-class … [--apply-immediately]`.

An operator asks for a class (`runbook run rds-resize --param instance_class=db.t3.large`). A
class RDS does not offer for PostgreSQL is refused before any check. The change is destructive
and needs two approvers (the Policy's two_person_actions); the approval form shows the current
and target class, the hourly cost difference (Policy instance_hourly_usd), Multi-AZ and the
expected downtime. Applied immediately, the flow waits (bounded) through `modifying` →
`available` and verifies the class and the API's readiness; deferred, it verifies the change is
pending for the maintenance window and the class is unchanged.

A wait that runs out of time does not undo or repeat anything: the modification is `done` in
the ledger (AWS accepted it; never sent again for the incident), its verification fails and a
human is paged to watch the instance.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blocks import Railway, Rds, SupportApi
from flows.acts import Platform, done_text
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from flows.scaling import operator_flow, refuse
from runbook.domain import Status
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from tasks import rds, support_api
from tasks.rds import DbInstance, DbWait

Act = Literal["none", "resize", "refuse"]
# the acts that change the platform (flows/acts.py); the others change nothing
ACT_ACTIONS: dict[str, ActionName] = {"resize": ActionName.MODIFY_DB_INSTANCE_CLASS}
OTHER_ACTS = frozenset({"none", "refuse"})
ENGINE = "postgres"
HOURS_PER_MONTH = 730
CLASS_PATTERN = r"^db\.[a-z0-9]+\.[a-z0-9]+$"


class ResizeSignals(BaseModel):
    """What rds-resize saw: the request and the instance now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: str
    apply_immediately: bool = True
    current: str
    status: str = "available"
    multi_az: bool = False
    standby_zone: str | None = None
    pending: str | None = None  # a class change already waiting for the maintenance window
    instance_id: str = "support-agent-db"

    @property
    def target(self) -> str:
        return f"rds:{self.instance_id}"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    spec: ActSpec | None = None
    figures: dict[str, str] = {}  # what the approval form shows (as its evidence table)


def class_refusal(requested: str, orderable: bool | None, prices: dict[str, float]) -> str | None:
    """Why `requested` is refused as an instance class (None: it is offered). `orderable` is
    what RDS answered for PostgreSQL; None (it listed no class at all, e.g. an emulator without
    the data) falls back to the Policy price table."""
    if orderable:
        return None
    known = ", ".join(sorted(prices)) or "none"
    if orderable is False:
        return (
            f"instance_class={requested!r} is not an RDS class offered for {ENGINE}"
            f" (the Policy prices: {known}); nothing checked or changed"
        )
    if requested in prices:
        return None
    return (
        f"instance_class={requested!r}: RDS lists no orderable {ENGINE} classes here and the"
        f" class is not in the Policy price table ({known}); nothing checked or changed"
    )


def hourly_usd(prices: dict[str, float], instance_class: str, multi_az: bool) -> float | None:
    """On-demand USD per hour from the Policy's (single-AZ) table; Multi-AZ runs two."""
    price = prices.get(instance_class)
    return None if price is None else price * (2 if multi_az else 1)


def cost_text(prices: dict[str, float], s: ResizeSignals) -> str:
    now = hourly_usd(prices, s.current, s.multi_az)
    then = hourly_usd(prices, s.requested, s.multi_az)
    az = " (Multi-AZ: two instances)" if s.multi_az else ""
    if now is None or then is None:
        missing = s.current if now is None else s.requested
        return f"unknown: {missing} is not in the Policy price table (instance_hourly_usd)"
    diff = then - now
    return (
        f"${now:.3f}/h → ${then:.3f}/h: {diff:+.3f} USD/h,"
        f" about {diff * HOURS_PER_MONTH:+.0f} USD/month{az}"
    )


def expected_downtime(multi_az: bool, apply_immediately: bool) -> str:
    """What the change costs in availability (AWS: Multi-AZ modifies the standby, then fails
    over; Single-AZ is unavailable while it is modified)."""
    how = (
        "about 1-2 minutes: the standby is modified first, then a failover (connections drop once)"
        if multi_az
        else "the database is unavailable while it is modified, usually several minutes"
    )
    return how if apply_immediately else f"none now; at the next maintenance window {how}"


def figures(s: ResizeSignals, policy: PolicyRules) -> dict[str, str]:
    """The approval form's table: current and target class, cost, Multi-AZ, downtime."""
    zone = f" (standby in {s.standby_zone})" if s.standby_zone else ""
    return {
        "current class": s.current,
        "target class": s.requested,
        "hourly cost difference": cost_text(policy.instance_hourly_usd, s),
        "Multi-AZ": ("yes" + zone) if s.multi_az else "no",
        "expected downtime": expected_downtime(s.multi_az, s.apply_immediately),
        "applies": "immediately (apply_immediately=true)"
        if s.apply_immediately
        else "at the next maintenance window (apply_immediately=false)",
        "instance status": s.status + (f", {s.pending} pending" if s.pending else ""),
    }


def decide(s: ResizeSignals, policy: PolicyRules) -> Decision:
    """Resize unless the instance is busy or already there; two approvers, always."""
    shown = figures(s, policy)
    if s.status != "available":
        return Decision(
            act="refuse",
            why=f"RDS {s.instance_id} is {s.status}: another change is under way; not resized",
            figures=shown,
        )
    if s.requested == s.current and s.pending is None:
        why = f"RDS {s.instance_id} already runs {s.current}"
        return Decision(act="none", why=why, figures=shown)
    if s.requested == s.pending and not s.apply_immediately:
        why = f"{s.requested} is already pending for the maintenance window (now {s.current})"
        return Decision(act="none", why=why, figures=shown)
    when = "now" if s.apply_immediately else "at the next maintenance window"
    why = (
        f"resize RDS {s.instance_id} {s.current} → {s.requested} {when} (operator request;"
        f" {shown['hourly cost difference']}; downtime: {shown['expected downtime']})"
    )
    params = {
        "instance_class": s.requested,
        "apply_immediately": s.apply_immediately,
        "from": s.current,
    }
    change = spec(
        policy, ActionName.MODIFY_DB_INSTANCE_CLASS, s.target, why, params, two_person=True
    )
    return Decision(act="resize", why=why, spec=change, figures=shown)


def verify_resize(
    instance: DbInstance,
    *,
    target: str,
    before: str,
    apply_immediately: bool,
    waited: DbWait | None = None,
    ready_ok: bool = True,
    ready_summary: str = "ok",
) -> tuple[bool, str]:
    """rds-resize's verify verdict (pure). Applied now: the instance settled (`available`,
    nothing pending) in the target class and the API is ready. Deferred: the target is pending
    and the class is unchanged."""
    now, pending = instance.instance_class, instance.pending_instance_class
    if not apply_immediately:
        ok = pending == target and now == before and instance.status == "available"
        return ok, (
            f"{target} pending for the maintenance window; still {now} ({instance.status})"
            if ok
            else f"expected {target} pending and {before} unchanged; RDS shows {now}"
            f" ({instance.status}), pending {pending or 'nothing'}"
        )
    path = " → ".join(waited.seen) if waited else instance.status
    took = f" after {waited.waited_s:.0f} s" if waited else ""
    if waited is not None and waited.timed_out:
        return False, (
            f"RDS still {instance.status}{took} ({path}): the change was accepted but is not"
            " verified; watch the instance"
        )
    if instance.status != "available" or pending is not None or now != target:
        return False, f"RDS is {instance.status} in {now} (pending {pending}), not {target}"
    if not ready_ok:
        return False, f"RDS is {target}, but /health/ready: {ready_summary}"
    return True, f"RDS is {target} and available{took} ({path}); /health/ready {ready_summary}"


@operator_flow(
    name="rds-resize",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def rds_resize(
    instance_class: Annotated[str, Field(pattern=CLASS_PATTERN, max_length=40)],
    apply_immediately: bool = True,
    incident_id: str | None = None,
    dry_run: bool = False,
    wait_timeout_s: Annotated[float, Field(ge=1, le=7200)] = 1800.0,
    poll_s: Annotated[float, Field(ge=0.5, le=60)] = 10.0,
    verify_window_s: Annotated[float, Field(ge=0, le=900)] = 60.0,
) -> RemediationResult:
    """Runbook Scaling Procedures → Database Scaling: change the RDS instance class.

    Two approvers; the form shows the current and target class, the hourly cost difference,
    Multi-AZ and the expected downtime. A class RDS does not offer for PostgreSQL is refused
    before any check. Applied immediately, waits (at most wait_timeout_s) through modifying →
    available, then verifies the class and /health/ready; a wait that runs out pages (the
    change stays done, unverified). With apply_immediately=false the change waits for the
    maintenance window: verified as pending, the class unchanged.

    Args:
        instance_class: Target RDS instance class, e.g. db.t3.large (offered for PostgreSQL)
        apply_immediately: Apply now (downtime now); off: at the next maintenance window
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        wait_timeout_s: At most this long waiting for modifying → available (then page)
        poll_s: Seconds between reads of the instance while waiting
        verify_window_s: How long the API may take to be ready after the change
    """
    run = await IncidentRun.start("rds-resize", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    aws, api, rw = await asyncio.gather(Rds.resolve(), SupportApi.resolve(), Railway.resolve())
    target = f"rds:{aws.instance_id}"
    offered = await rds.get_orderable_instance_class(aws, instance_class, ENGINE)
    refusal = class_refusal(instance_class, offered.orderable, policy.instance_hourly_usd)
    if refusal is not None:
        return await refuse(run, ActionName.MODIFY_DB_INSTANCE_CLASS, target, "refuse", refusal)
    if offered.orderable is None:
        await run.note("seen", "RDS lists no orderable classes: checked the Policy price table")
    instance = await rds.get_db_instance(aws)
    signals = ResizeSignals(
        requested=instance_class,
        apply_immediately=apply_immediately,
        current=instance.instance_class,
        status=instance.status,
        multi_az=instance.multi_az,
        standby_zone=instance.secondary_availability_zone,
        pending=instance.pending_instance_class,
        instance_id=aws.instance_id,
    )
    decision = decide(signals, policy)
    evidence: dict[str, Any] = dict(decision.figures)
    await run.seen(f"RDS {instance.instance_class} ({instance.status})", **evidence)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        return await refuse(
            run, ActionName.MODIFY_DB_INSTANCE_CLASS, target, "refuse", decision.why
        )
    if decision.spec is None:
        return await run.finish("none", decision.why, verified=True, summary=decision.why)
    loop = asyncio.get_running_loop()

    async def resized(acted_at: float) -> tuple[bool, str]:
        if not apply_immediately:
            return verify_resize(
                await rds.get_db_instance(aws),
                target=instance_class,
                before=signals.current,
                apply_immediately=False,
            )
        remaining = max(0.0, acted_at + wait_timeout_s - loop.time())
        waited = await rds.wait_for_db_instance(aws, remaining, poll_s)
        ok, why = verify_resize(
            waited.instance,
            target=instance_class,
            before=signals.current,
            apply_immediately=True,
            waited=waited,
        )
        if not ok:
            return ok, why
        deadline = loop.time() + verify_window_s
        while True:  # the class is there: the API must reach its database (readiness)
            ready = await support_api.get_api_readiness(api)
            ok, why = verify_resize(
                waited.instance,
                target=instance_class,
                before=signals.current,
                apply_immediately=True,
                waited=waited,
                ready_ok=ready.status is Status.OK,
                ready_summary=ready.summary,
            )
            if ok or loop.time() + 5 > deadline:
                return ok, why
            await asyncio.sleep(5)

    async def still_wanted() -> bool:  # re-checked after the approvals: not done meanwhile
        now = await rds.get_db_instance(aws)
        there = {now.instance_class} if apply_immediately else {now.pending_instance_class}
        return instance_class not in there

    change = decision.spec
    return await run.execute(
        decision.act,
        change,
        Platform(railway=rw, rds=aws),
        evidence=evidence,
        describe=done_text(change.action, change.params),
        verify=resized,
        still_needed=still_wanted,
        window_s=0.0,  # one verdict: the waiter is bounded by wait_timeout_s
        settle_s=0.0,
    )
