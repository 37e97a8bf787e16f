"""Runbook "Security Procedures" → Security Incident Response, its five steps:

1. **assess scope** — which stores, keys and customers: the access log over a window (Policy
   `security_window_s`), plus stores named by the operator or the alert's `store`/`stores` label;
2. **contain** — disable the affected keys (destructive: approval; the form lists every key and
   store it touches), verified (disabled, nothing accepted with them since);
3. **investigate** — the relevant access-log lines as an artifact;
4. **remediate** — a checklist artifact for the human (patching is not automated), and with
   `force_rotate` a new key for each affected store (rotate-store-key as a subflow) once the
   containment was approved;
5. **notify** — page and mail the Security contact (Contacts block) as soon as the scope is
   known; per-store customer notifications drafted (artifact + drafts mailed to Security) for a
   human to send. Nothing customer-facing is sent without an approval.

The leaked-key pattern (`assess`, pure): a key used on a bulk-export or admin path, or used from
an address that also hit such a path (e.g. probing the admin API with made-up keys).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blocks import AppDatabase, Contacts, Railway
from flows.acts import Platform
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import notify_email, page, page_failed_run
from flows.rotate_store_key import StoreId, UnknownStore, rotate_store_key
from flows.scaling import operator_flow
from flows.security_reports import (
    StoreScope,
    checklist_markdown,
    customer_drafts,
    drafts_markdown,
    investigation_markdown,
    publish,
    scope_markdown,
)
from runbook import incidents, opsdb
from runbook.plan import ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from runbook.verify import verify_or_undo
from tasks import app_keys
from tasks.app_keys import KeyUse, StoreKey

FLOW = "security-incident"
Act = Literal["contain", "escalate", "none"]
ACT_ACTIONS: dict[str, tuple[ActionName, ...]] = {"contain": (ActionName.DISABLE_API_KEY,)}
OTHER_ACTS = frozenset({"escalate", "none"})
# bulk exports, customer lists, the admin API: nothing a store's integration calls
SENSITIVE_PATH = re.compile(r"(^|/)(export|exports|admin|customers|api_keys)(/|$)", re.IGNORECASE)
STORE_LABELS = ("store", "stores", "store_id")


class SecuritySignals(BaseModel):
    """The access log of the window (grouped), every store key, and stores named by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: int
    uses: tuple[KeyUse, ...] = ()
    keys: tuple[StoreKey, ...] = ()
    named: tuple[str, ...] = ()  # by the operator (`stores`) or the alert's label
    from_alert: bool = False


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    scope: tuple[StoreScope, ...] = ()
    spec: ActSpec | None = None  # disable_api_key, when there are live keys to disable


def assess(s: SecuritySignals) -> tuple[StoreScope, ...]:
    """Step 1 (pure): the stores and keys the leaked-key pattern implicates, and why."""
    hostile = {u.ip for u in s.uses if SENSITIVE_PATH.search(u.path)}
    found: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"prefixes": set(), "ips": set(), "reasons": set(), "requests": 0}
    )
    for u in s.uses:
        if not u.store_id or not u.key_prefix or u.accepted == 0:
            continue
        if SENSITIVE_PATH.search(u.path):
            reason = f"{u.method} {u.path} accepted {u.accepted}x from {u.ip}"
        elif u.ip in hostile:
            reason = f"used from {u.ip}, which also hit export/admin paths"
        else:
            continue
        entry = found[u.store_id]
        entry["prefixes"].add(u.key_prefix)
        entry["ips"].add(u.ip)
        entry["reasons"].add(reason)
        entry["requests"] += u.accepted
    by_store: dict[str, list[StoreKey]] = defaultdict(list)
    for k in s.keys:
        by_store[k.store_id].append(k)
    for store in s.named:
        entry = found[store]
        entry["prefixes"].update(k.key_prefix for k in by_store.get(store, []) if k.live)
        entry["reasons"].add("named by the operator or the alert")
    scope = []
    for store in sorted(found):
        entry = found[store]
        keys = [k for k in by_store.get(store, []) if k.key_prefix in entry["prefixes"]]
        scope.append(
            StoreScope(
                store_id=store,
                key_ids=tuple(k.id for k in keys if k.live),
                key_prefixes=tuple(sorted(entry["prefixes"])),
                already_off=tuple(k.id for k in keys if not k.live),
                ips=tuple(sorted(entry["ips"])),
                reasons=tuple(sorted(entry["reasons"])),
                requests=entry["requests"],
            )
        )
    return tuple(scope)


def decide(s: SecuritySignals, policy: PolicyRules) -> Decision:
    """Contain what the pattern implicates; with nothing to disable, tell Security (an alert
    that finds nothing still needs a human) or, for a manual run, say so."""
    scope = assess(s)
    if not scope:
        why = (
            f"no leaked-key pattern in the access log of the last {s.window_s} s (no key used"
            " on an export/admin path, none from an address that hit one)"
        )
        if s.from_alert:
            return Decision(act="escalate", why=why + ": the alert needs a human to look")
        return Decision(act="none", why=why)
    stores = [x.store_id for x in scope]
    key_ids = [i for x in scope for i in x.key_ids]
    if not key_ids:
        return Decision(
            act="escalate",
            why=f"{', '.join(stores)} implicated; their keys are already disabled or revoked:"
            " nothing to contain, Security must look",
            scope=scope,
        )
    why = (
        f"{len(key_ids)} key(s) of {len(stores)} store(s) show a leaked-key pattern"
        f" ({', '.join(stores)}): disable them"
    )
    params = {
        "stores": stores,
        "key_ids": key_ids,
        "key_prefixes": [p for x in scope if x.key_ids for p in x.key_prefixes],
    }
    change = spec(policy, ActionName.DISABLE_API_KEY, f"stores:{','.join(stores)}", why, params)
    return Decision(act="contain", why=why, scope=scope, spec=change)


def verify_contained(
    wanted: list[int], keys: list[StoreKey], accepted_since: int
) -> tuple[bool, str]:
    """Step 2's verdict (pure): every listed key is off and nothing was accepted with them."""
    off = {k.id for k in keys if not k.live}
    missing = [i for i in wanted if i not in off]
    ok = not missing and accepted_since == 0
    return ok, (
        f"{len(wanted) - len(missing)}/{len(wanted)} key(s) disabled"
        + (f" (still live: {', '.join(f'#{i}' for i in missing)})" if missing else "")
        + f"; {accepted_since} request(s) accepted with them since"
    )


async def _alert_stores(incident_id: str) -> list[str]:
    """Stores the alert names in its labels (`store`, `stores`, `store_id`)."""
    async with await opsdb.connect() as conn:
        found = await incidents.get_incident(conn, incident_id)
    labels = found.labels if found else {}
    named = [v for k in STORE_LABELS for v in re.split(r"[,\s]+", labels.get(k, "")) if v]
    return list(dict.fromkeys(named))


async def _tell_security(run: IncidentRun, decision: Decision, detail: str) -> None:
    """Page now (on-call) and mail the Security contact: they may have to approve."""
    contacts = await Contacts.resolve()
    security = contacts.contact_for("security")
    stores = ", ".join(s.store_id for s in decision.scope) or "none found"
    summary = f"Security incident {run.incident_id}: {decision.why} (stores: {stores})"
    await page(summary, {"incident": run.incident_id, "flow": FLOW, "contact": security.name})
    if security.channel == "email" and security.address:
        await notify_email(
            f"[security] {summary[:150]}", f"{summary}\n\n{detail}", [security.address]
        )
    await run.note("notified", f"paged on-call; {security.name} ({security.address}) told")


@operator_flow(
    name=FLOW,
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def security_incident(
    incident_id: str | None = None,
    dry_run: bool = False,
    window_s: Annotated[int, Field(ge=60, le=7 * 86_400)] | None = None,
    stores: list[StoreId] | None = None,
    force_rotate: bool = False,
    verify_window_s: Annotated[float, Field(ge=5, le=900)] = 30.0,
) -> RemediationResult:
    """Runbook Security Procedures → Security Incident Response.

    Assess the scope from the access log (stores, keys, customers), contain by disabling the
    affected keys (after an approval), collect the access-log lines, leave a remediation
    checklist (optionally force-rotate the stores' keys), page Security and draft per-store
    customer notifications for a human to send.

    Args:
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Assess and decide, record the plan, change and send nothing
        window_s: How far back to read the access log (default: the Policy's)
        stores: Stores known to be affected (their live keys are contained too)
        force_rotate: After an approved containment, issue and deliver each store a new key
        verify_window_s: How long the containment may take to show
    """
    db = await AppDatabase.resolve()
    named = list(dict.fromkeys(stores or []))
    known = {s.id for s in await app_keys.get_stores(db, named)} if named else set()
    if missing := [s for s in named if s not in known]:
        raise UnknownStore(
            f"{FLOW}: bad parameter stores={named!r} (no such store: {', '.join(missing)});"
            " nothing changed"
        )
    run = await IncidentRun.start(FLOW, incident_id, dry_run)
    if (done := await run.finish_if_resolved()) is not None:
        return done
    window = window_s or run.policy.security_window_s
    labelled = await _alert_stores(run.incident_id) if run.from_incident else []
    uses, keys = await asyncio.gather(
        app_keys.get_key_uses(db, window), app_keys.get_store_keys(db)
    )
    all_stores = {k.store_id for k in keys}
    signals = SecuritySignals(
        window_s=window,
        uses=uses,
        keys=keys,
        named=tuple(dict.fromkeys([*named, *(s for s in labelled if s in all_stores)])),
        from_alert=run.from_incident,
    )
    decision = decide(signals, run.policy)
    affected = [s.store_id for s in decision.scope]
    conversations, store_rows = await asyncio.gather(
        app_keys.get_conversation_counts(db, affected, window),
        app_keys.get_stores(db, affected),
    )
    scope_md = scope_markdown(decision.scope, window, conversations, decision.why)
    await publish("security-scope", run.incident_id, scope_md, "Security incident: scope")
    evidence: dict[str, Any] = {
        s.store_id: f"keys {', '.join(f'#{i}' for i in s.key_ids) or 'none live'}"
        f" ({', '.join(f'{p}…' for p in s.key_prefixes)}); from {', '.join(s.ips) or '—'};"
        f" {conversations.get(s.store_id, 0)} conversations in the window"
        for s in decision.scope
    }
    await run.seen(f"scope: {', '.join(affected) or 'no store implicated'}", **evidence)
    await run.decided(decision.act, decision.why)
    if decision.scope and not run.dry_run:
        await _tell_security(run, decision, scope_md)
    elif decision.act == "escalate" and not run.dry_run:
        await run.escalate(f"{FLOW}: {decision.why}")

    contained, verified = "not needed: no live key implicated", None
    if decision.spec is not None:
        contained, verified = await _contain(run, decision.spec, db, evidence, verify_window_s)

    ips = sorted({ip for s in decision.scope for ip in s.ips})
    lines = await app_keys.get_access_lines(db, window, affected, ips) if affected else ()
    await publish(
        "security-access-log",
        run.incident_id,
        investigation_markdown(lines, affected),
        "Security incident: access-log lines",
    )
    rotated: list[str] = []
    if force_rotate and verified and not run.dry_run:
        for store in affected:
            result = await rotate_store_key(store_id=store, incident_id=run.incident_id)
            if result.verified:
                rotated.append(store)
    await publish(
        "security-checklist",
        run.incident_id,
        checklist_markdown(decision.scope, contained, rotated),
        "Security incident: remediation checklist",
    )
    drafts = customer_drafts(
        decision.scope,
        {s.id: s for s in store_rows},
        conversations,
        window,
        contained=bool(verified),
    )
    await publish(
        "security-customer-drafts",
        run.incident_id,
        drafts_markdown(drafts),
        "Security incident: customer notifications, drafts NOT sent",
    )
    if drafts and not run.dry_run:
        security = (await Contacts.resolve()).contact_for("security")
        to = [security.address] if security.channel == "email" and security.address else None
        for d in drafts:
            await notify_email(
                f"[draft to send: {d.store_id} <{d.to}>] {d.subject}",
                f"DRAFT — review and send per policy; not sent to the customer.\n\n"
                f"To: {d.to}\nSubject: {d.subject}\n\n{d.body}",
                to,
            )
        await run.note("notified", f"{len(drafts)} customer notification(s) drafted, not sent")
    summary = (
        f"scope: {', '.join(affected) or 'no store'}; containment {contained}"
        + (f"; new keys for {', '.join(rotated)}" if rotated else "")
        + f"; {len(drafts)} customer notification draft(s) for a human to send"
    )
    return await run.finish(decision.act, decision.why, verified=verified, summary=summary)


async def _contain(
    run: IncidentRun,
    change: ActSpec,
    db: AppDatabase,
    evidence: dict[str, Any],
    window_s: float,
) -> tuple[str, bool | None]:
    """Step 2: disable the keys (approval), then verify; returns (what happened, verified)."""
    rw = await Railway.resolve()
    wanted = [int(i) for i in change.params["key_ids"]]
    stores = list(change.params["stores"])

    async def still_live() -> bool:  # re-checked after the approval
        return any(k.live for k in await app_keys.get_store_keys(db, stores) if k.id in wanted)

    outcome = await run.act_spec(
        change, Platform(railway=rw, app_db=db), evidence, still_needed=still_live
    )
    if outcome.status == "planned":
        return "planned (dry run)", None
    if outcome.status != "done":
        why = f"{outcome.status}: {outcome.detail or 'no change'}; the keys stay active"
        if not outcome.paged:
            await run.escalate(f"{FLOW}: containment {why}")
        return why, None
    acted = datetime.now(UTC)

    async def off() -> tuple[bool, str]:
        now = list(await app_keys.get_store_keys(db, stores))
        disabled = [k.disabled_at or k.revoked_at for k in now if k.id in wanted]
        since = min((t for t in disabled if t is not None), default=acted)
        accepted = await app_keys.count_accepted_uses(db, wanted, since)
        return verify_contained(wanted, now, accepted)

    checked = await verify_or_undo(
        run.request_for(change, evidence), verify=off, page=page, window_s=window_s, interval_s=2.0
    )
    state = "done" if checked.verified else "done but NOT verified"
    return f"{state} ({checked.detail})", checked.verified
