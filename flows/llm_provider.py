"""Runbook §3 "LLM Provider Issues": status page + probes → fallback model, request queuing,
a human for quota or key problems; and switching back once the primary is healthy again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks import AppDatabase, LangSmith, LlmProbe, Railway, StatusPages
from blocks.policy import Policy
from flows.acts import Platform, done_text
from flows.escalation import request_support
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page_failed_run
from runbook import ledger, opsdb
from runbook.errors import NotAuthorized, RunbookError
from runbook.plan import (
    MODEL_VARIABLE,
    QUEUE_VARIABLE,
    ActionName,
    ActSpec,
    model_switch,
    spec,
)
from runbook.policy import PolicyRules
from tasks import app_metrics, langsmith, llm, railway, status_pages

Verdict = Literal["provider-outage", "rate-limited", "quota-exhausted", "bad-key", "healthy"]
Act = Literal["none", "fallback", "fallback_and_queue", "page", "restore", "stop_queuing"]


class Probe(BaseModel):
    """One model probe reduced to what the decision needs."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    http_status: int = 0  # 0 = no answer (timeout / connection)
    error_code: str | None = None


class LlmSignals(BaseModel):
    model_config = ConfigDict(frozen=True)

    indicator: str = "none"  # OpenAI status page
    degraded_components: tuple[str, ...] = ()
    unresolved_incidents: tuple[str, ...] = ()
    primary: Probe
    fallback: Probe
    on_fallback: bool = False
    queue_enabled: bool = False  # REQUEST_QUEUE_ENABLED on the platform
    llm_errors_5m: int = 0
    primary_model: str = "gpt-4o"
    fallback_model: str = "gpt-4o-mini"
    target: str = "railway:api"  # where acts go (the Railway service)


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    act: Act
    why: str
    specs: tuple[ActSpec, ...] = ()  # the changes to make, in order


# the acts that change the platform and the executors they use (flows/acts.py)
ACT_ACTIONS: dict[str, tuple[ActionName, ...]] = {
    "fallback": (ActionName.SWITCH_MODEL,),
    "fallback_and_queue": (ActionName.SWITCH_MODEL, ActionName.ENABLE_REQUEST_QUEUE),
    "restore": (ActionName.RESTORE_MODEL, ActionName.DISABLE_REQUEST_QUEUE),
    "stop_queuing": (ActionName.DISABLE_REQUEST_QUEUE,),
}
OTHER_ACTS = frozenset({"none", "page"})


def classify_probe(p: Probe) -> Verdict:
    if p.ok:
        return "healthy"
    if p.http_status in (401, 403):
        return "bad-key"
    if p.http_status == 429 and p.error_code == "insufficient_quota":
        return "quota-exhausted"
    if p.http_status == 429:
        return "rate-limited"
    return "provider-outage"  # 5xx, timeout, no answer


def decide(s: LlmSignals, policy: PolicyRules | None = None) -> Decision:
    """All of §3's branching, as a pure function; changing acts come with their specs."""
    rules = policy or PolicyRules()
    decision = _decide(s)
    back = s.primary_model
    switch = model_switch(rules, s.target, decision.why, s.fallback_model, back)
    if decision.act == "fallback":
        return decision.model_copy(update={"specs": (switch,)})
    if decision.act == "fallback_and_queue":
        queue = spec(
            rules, ActionName.ENABLE_REQUEST_QUEUE, s.target, decision.why, {QUEUE_VARIABLE: "true"}
        )
        return decision.model_copy(update={"specs": (switch, queue)})
    stop_queue = spec(
        rules, ActionName.DISABLE_REQUEST_QUEUE, s.target, decision.why, {QUEUE_VARIABLE: "false"}
    )
    if decision.act == "restore":
        restore = spec(
            rules, ActionName.RESTORE_MODEL, s.target, decision.why, {MODEL_VARIABLE: back}
        )
        specs = (restore, stop_queue) if s.queue_enabled else (restore,)
        return decision.model_copy(update={"specs": specs})
    if decision.act == "stop_queuing":
        return decision.model_copy(update={"specs": (stop_queue,)})
    return decision


def verify_llm(llm_errors: int, window_s: int) -> tuple[bool, str]:
    """§3's verify verdict on the symptom: LLM errors in the app after the switch (pure)."""
    return llm_errors == 0, f"{llm_errors} LLM errors in the app over the last {window_s} s"


def _decide(s: LlmSignals) -> Decision:
    """§3's branching. The status page alone can lie: a `none` indicator with an unresolved
    incident still counts as an incident."""
    page_bad = s.indicator not in ("none", "") or bool(s.unresolved_incidents)
    page_note = f"status page {s.indicator}" + (
        f", incidents: {'; '.join(s.unresolved_incidents)}" if s.unresolved_incidents else ""
    )
    verdict = classify_probe(s.primary)
    if verdict == "healthy" and page_bad and s.llm_errors_5m > 0:
        verdict = "provider-outage"
    if verdict == "bad-key":
        return Decision(
            verdict=verdict,
            act="page",
            why="the API key was refused (401): rotate it (key-rotation flow)",
        )
    if verdict == "quota-exhausted":
        return Decision(
            verdict=verdict,
            act="page",
            why="insufficient_quota: raise the OpenAI budget; retrying will not help",
        )
    if verdict in ("provider-outage", "rate-limited"):
        what = f"primary model {verdict} (HTTP {s.primary.http_status or 'no answer'}); {page_note}"
        fallback_bad = classify_probe(s.fallback) != "healthy"
        if fallback_bad:
            return Decision(
                verdict=verdict,
                act="fallback_and_queue",
                why=f"{what}; the fallback struggles too: queue requests",
            )
        if s.on_fallback:
            return Decision(verdict=verdict, act="none", why=f"{what}; already on the fallback")
        return Decision(verdict=verdict, act="fallback", why=what)
    if s.on_fallback and not page_bad:
        return Decision(
            verdict="healthy",
            act="restore",
            why="primary answers again and the status page is clear",
        )
    if s.queue_enabled and not page_bad and classify_probe(s.fallback) == "healthy":
        return Decision(
            verdict="healthy",
            act="stop_queuing",
            why="the models answer again: request queuing is no longer needed",
        )
    return Decision(verdict="healthy", act="none", why=f"primary model healthy; {page_note}")


async def probe(client: LlmProbe, model: str) -> Probe:
    try:
        result = await llm.get_model_health(client, model)
    except NotAuthorized:
        return Probe(ok=False, http_status=401)
    except RunbookError:
        return Probe(ok=False, http_status=0)
    return Probe(ok=result.ok, http_status=result.http_status, error_code=result.error_code)


async def observe(
    probe_block: LlmProbe, pages: StatusPages, ls: LangSmith, rw: Railway
) -> tuple[LlmSignals, dict[str, Any]]:
    async def page() -> Any:
        try:
            return await status_pages.get_status_page(pages, "openai")
        except RunbookError:
            return None

    async def traces() -> Any:
        try:
            return await langsmith.get_trace_errors(ls, 300)
        except RunbookError:
            return None

    primary, fallback, status, errors, model, queue = await asyncio.gather(
        probe(probe_block, probe_block.primary_model),
        probe(probe_block, probe_block.fallback_model),
        page(),
        traces(),
        railway.get_variable(rw, MODEL_VARIABLE),
        railway.get_variable(rw, QUEUE_VARIABLE),
    )
    signals = LlmSignals(
        indicator=status.indicator if status else "unknown",
        degraded_components=tuple(c.name for c in status.degraded_components) if status else (),
        unresolved_incidents=status.unresolved_incidents if status else (),
        primary=primary,
        fallback=fallback,
        on_fallback=model.value == probe_block.fallback_model,
        queue_enabled=(queue.value or "").lower() == "true",
        llm_errors_5m=errors.llm_errored if errors else 0,
        primary_model=probe_block.primary_model,
        fallback_model=probe_block.fallback_model,
        target=f"railway:{rw.service_id}",
    )
    evidence = {
        "openai_status": signals.indicator,
        "incidents": list(signals.unresolved_incidents),
        "primary": f"{probe_block.primary_model}: {primary.http_status} {primary.error_code}",
        "fallback": f"{probe_block.fallback_model}: {fallback.http_status} {fallback.error_code}",
        MODEL_VARIABLE: model.value,
        QUEUE_VARIABLE: queue.value,
        "langsmith_llm_errors_5m": signals.llm_errors_5m,
    }
    return signals, evidence


def restore_hold(last_switch_age_s: float | None, min_interval_s: float) -> str | None:
    """Hysteresis: why a switch back to the primary must wait (None when it may go now).
    Switching *to* the fallback is never held (users are failing); switching back is, for
    `model_switch_min_interval_s` after the last switch to the fallback, so a primary that
    recovers for a moment does not make the platform flap between models."""
    if last_switch_age_s is not None and last_switch_age_s < min_interval_s:
        return (
            f"switched to the fallback {last_switch_age_s:.0f} s ago; switching back waits"
            f" {min_interval_s:.0f} s (no flapping between models)"
        )
    return None


async def last_switch_age_s(target: str) -> float | None:
    async with await opsdb.connect() as conn:
        last = await ledger.last_done(conn, "switch_model", target)
    if last is None:
        return None
    return (datetime.now(UTC) - last.updated_at).total_seconds()


async def primary_stays_healthy(client: LlmProbe, seconds: float, every: float = 5.0) -> bool:
    """The primary answered every probe for `seconds` (the Policy's restore duration)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if not (await probe(client, client.primary_model)).ok:
            return False
        if asyncio.get_running_loop().time() >= deadline:
            return True
        await asyncio.sleep(every)


@flow(
    name="llm-provider",
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def llm_provider(
    incident_id: str | None = None,
    dry_run: bool = False,
    restore_healthy_s: float | None = None,
    verify_window_s: float = 60.0,
) -> RemediationResult:
    """Runbook §3 LLM Provider Issues: outage or rate limit → fallback model (and request
    queuing when both struggle); quota or key → page a human; primary healthy → switch back."""
    run = await IncidentRun.start("llm-provider", incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy: Policy = run.policy
    probe_block, pages, ls, rw, db = await asyncio.gather(
        LlmProbe.resolve(),
        StatusPages.resolve(),
        LangSmith.resolve(),
        Railway.resolve(),
        AppDatabase.resolve(),
    )
    signals, evidence = await observe(probe_block, pages, ls, rw)
    await run.seen(f"primary {evidence['primary']}, fallback {evidence['fallback']}", **evidence)
    decision = decide(signals, policy)
    await run.decided(f"{decision.verdict} → {decision.act}", decision.why)
    target = f"railway:{rw.service_id}"
    platform = Platform(railway=rw)

    if decision.verdict == "provider-outage" and signals.indicator in {"major", "critical"}:
        # widespread (OpenAI's own page says so): the runbook says contact OpenAI support
        line = await request_support(
            run.incident_id, "openai-support", "OpenAI API outage", decision.why, evidence
        )
        await run.escalate(f"LLM provider outage is widespread: {line}")
    if decision.act in ("fallback", "fallback_and_queue"):
        switch, *also = decision.specs
        for change in also:  # queuing first: it only holds requests while the switch lands
            await run.act_spec(change, platform, evidence)

        async def llm_errors_gone(acted_at: float) -> tuple[bool, str]:
            elapsed = int(asyncio.get_running_loop().time() - acted_at)
            window = max(10, min(elapsed, policy.recent_window_s))
            causes = await app_metrics.get_error_causes(db, window)
            return verify_llm(causes.by_cause.get("llm", 0), window)

        return await run.execute(
            decision.act,
            switch,
            platform,
            evidence=evidence,
            describe=done_text(switch.action, switch.params)
            + f". It is switched back once the primary is healthy for"
            f" {policy.llm_restore_healthy_s} s (llm-provider runs).",
            verify=llm_errors_gone,
            window_s=verify_window_s,
        )
    if decision.act == "stop_queuing":
        outcome = await run.act_spec(decision.specs[0], platform, evidence)
        return await run.finish(
            decision.act,
            decision.why,
            verified=None,
            summary="request queuing turned off again"
            if outcome.status in {"done", "already_done"}
            else f"request queuing NOT turned off: {outcome.status} ({outcome.detail})",
        )
    if decision.act == "page":
        await run.escalate(f"LLM provider: {decision.why}")
        return await run.finish(decision.act, decision.why, verified=None, summary=decision.why)
    if decision.act == "restore":
        hold = restore_hold(await last_switch_age_s(target), policy.model_switch_min_interval_s)
        if hold is not None:
            return await run.finish("none", hold, verified=None, summary=hold)
        wait = policy.llm_restore_healthy_s if restore_healthy_s is None else restore_healthy_s
        if not await primary_stays_healthy(probe_block, wait):
            return await run.finish(
                "none",
                "primary not yet stable",
                verified=None,
                summary="primary failed a probe; staying on the fallback",
            )
        primary = probe_block.primary_model
        restore_model, *also = decision.specs
        outcome = await run.act_spec(restore_model, platform, evidence)
        if outcome.status in {"done", "already_done"}:
            for change in also:  # and stop queuing requests
                await run.act_spec(change, platform, evidence)
        return await run.finish(
            decision.act,
            decision.why,
            verified=outcome.status == "done",
            summary=f"DEFAULT_MODEL restored to {primary}"
            if outcome.status in {"done", "already_done"}
            else f"DEFAULT_MODEL NOT restored to {primary}: {outcome.status}"
            f" ({outcome.detail or 'no change'})",
        )
    return await run.finish(decision.act, decision.why, verified=True, summary=decision.why)
