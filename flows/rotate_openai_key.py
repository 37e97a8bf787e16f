"""Runbook "Security Procedures" → Rotate API Keys, the OpenAI key:

    1. generate a new key — a project API key cannot be created by API, so: a new service
       account, whose key the admin API shows once;
    2. update the secret — `OPENAI_API_KEY` on the service with `skipDeploys: true` (same act as
       1: the value never leaves those two calls), then an explicit redeploy (destructive:
       approval, unless the Policy auto-approves);
    3. verify — a live completion through the app;
    4. revoke the old key — delete the user key, or the old service account (approval).

If the completion fails after the redeploy, the old key is put back, the service redeployed
again, the new service account retired, and the incident escalates. If the redeploy is not
approved, the variable is put back before anything ran on the new key.

The old key's value (read from the service, to put it back) lives only in this process, so
approvals pause here rather than suspending the run. Neither key's value appears in logs,
artifacts, notifications, flow-run parameters or exceptions.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from blocks import OpenAiAdmin, Railway, SupportApi
from flows.acts import Platform
from flows.incident import IncidentRun, RemediationResult
from flows.notifications import page, page_failed_run
from flows.scaling import operator_flow, refuse
from runbook import ledger, opsdb
from runbook.errors import ConfigurationError, PermanentError, RunbookError
from runbook.plan import OPENAI_KEY_VARIABLE, ActionName, ActSpec, spec
from runbook.policy import PolicyRules
from runbook.verify import verify_or_undo
from tasks import openai_admin, railway
from tasks.openai_admin import ProjectKey
from tasks.support_api import post_chat

FLOW = "rotate-openai-key"
Act = Literal["rotate", "refuse"]
ACT_ACTIONS: dict[str, tuple[ActionName, ...]] = {
    "rotate": (
        ActionName.ISSUE_OPENAI_KEY,
        ActionName.REDEPLOY_SERVICE,
        ActionName.REVOKE_OPENAI_KEY,
    ),
}
OTHER_ACTS = frozenset({"refuse"})


class OpenAiKeySignals(BaseModel):
    """The project's keys, which one the app uses (matched on its redacted form), and whether a
    live completion works now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str
    keys: tuple[ProjectKey, ...] = ()
    variable_set: bool = True
    live_key_ids: tuple[str, ...] = ()  # the project keys the app's value matches
    chat_ok: bool = True
    chat_summary: str = ""
    service_target: str = "railway:api"
    account_name: str = "support-api"
    # an earlier rotation that issued a key but left the key it replaced valid (it crashed, or
    # its revocation was rejected): "incident X left key K valid"
    unfinished: str | None = None


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    act: Act
    why: str
    specs: tuple[ActSpec, ...] = ()  # issue, redeploy, revoke


def decide(s: OpenAiKeySignals, policy: PolicyRules) -> Decision:
    """Rotate when the app's key is known among the project's keys and the app works now (else
    a verify after the change could not tell a bad new key from a problem already there)."""
    if s.unfinished:
        return Decision(
            act="refuse",
            why=f"an earlier rotation is unfinished: {s.unfinished} — revoke that key (or"
            " finish that incident) first; another rotation would leave it valid for good",
        )
    if not s.variable_set:
        return Decision(act="refuse", why=f"{OPENAI_KEY_VARIABLE} is not set on the service")
    if not s.live_key_ids:
        return Decision(
            act="refuse",
            why=f"the app's {OPENAI_KEY_VARIABLE} is none of project {s.project_id}'s keys:"
            " nothing to rotate from here (another project, or already revoked)",
        )
    if len(s.live_key_ids) > 1:
        return Decision(
            act="refuse",
            why=f"the app's key matches several project keys ({', '.join(s.live_key_ids)}):"
            " cannot tell which one to revoke",
        )
    if not s.chat_ok:
        return Decision(
            act="refuse",
            why=f"a live completion through the app fails now ({s.chat_summary}): fix that"
            " first, a verify after the rotation could not tell",
        )
    old = next(k for k in s.keys if k.id == s.live_key_ids[0])
    owner = "service account " + old.owner_id if old.owner_type == "service_account" else "user"
    target = f"openai:{s.project_id}"
    why = (
        f"rotate the app's OpenAI key {old.id} ({owner}): new service account"
        f" {s.account_name}, {OPENAI_KEY_VARIABLE} set with skipDeploys, redeploy, verify a"
        " live completion, then revoke the old key"
    )
    issue = spec(
        policy,
        ActionName.ISSUE_OPENAI_KEY,
        target,
        why,
        {
            "service_account_name": s.account_name,
            "variable": OPENAI_KEY_VARIABLE,
            "replaces_key": old.id,
        },
    )
    redeploy = spec(
        policy,
        ActionName.REDEPLOY_SERVICE,
        s.service_target,
        f"start the service on the new {OPENAI_KEY_VARIABLE} (set with skipDeploys);"
        " if a live completion then fails, the old key is put back and it redeploys again",
        # shown on the approval form and bound to the approval's scope: which key goes live
        {
            "variable": OPENAI_KEY_VARIABLE,
            "new_service_account": s.account_name,
            "replaces_key": old.id,
        },
    )
    revoke = spec(
        policy,
        ActionName.REVOKE_OPENAI_KEY,
        target,
        f"the app works on the new key: revoke the old key {old.id} ({owner})",
        {
            "key_id": old.id,
            "owner": old.owner_type,
            "service_account_id": old.owner_id if old.owner_type == "service_account" else None,
            "redacted": old.redacted_value,
        },
    )
    return Decision(act="rotate", why=why, specs=(issue, redeploy, revoke))


def verify_completion(ok: bool, http_status: int, error: str | None) -> tuple[bool, str]:
    """Step 3: a live completion through the app answers (pure)."""
    if ok:
        return True, f"a live completion through the app answered (HTTP {http_status})"
    return False, f"a live completion through the app failed (HTTP {http_status}: {error})"


def verify_old_revoked(old_id: str, key_ids: list[str], completion_ok: bool) -> tuple[bool, str]:
    """Step 4: the old key is gone from the project and the app still answers (pure)."""
    gone = old_id not in key_ids
    ok = gone and completion_ok
    return ok, (
        f"old key {old_id} {'gone from the project' if gone else 'STILL LISTED'};"
        f" live completion {'ok' if completion_ok else 'FAILED'}"
    )


def live_keys(keys: tuple[ProjectKey, ...], value: SecretStr | None) -> tuple[str, ...]:
    """The ids of the project keys whose redacted form matches the app's key."""
    if value is None:
        return ()
    raw = value.get_secret_value()
    return tuple(k.id for k in keys if k.matches(raw))


async def _completion(api: SupportApi) -> tuple[bool, str]:
    probe = await post_chat(api)
    return verify_completion(probe.ok, probe.http_status, probe.error)


@operator_flow(
    name=FLOW,
    log_prints=False,
    on_failure=[page_failed_run],
    on_crashed=[page_failed_run],
)
async def rotate_openai_key(
    incident_id: str | None = None,
    dry_run: bool = False,
    verify_window_s: Annotated[float, Field(ge=5, le=900)] = 30.0,
) -> RemediationResult:
    """Runbook Security Procedures → Rotate API Keys: the app's OpenAI key.

    A new service account and its key (set as OPENAI_API_KEY with skipDeploys), an explicit
    redeploy (approval unless the Policy auto-approves), a live completion through the app,
    then the old key revoked (approval). A failed completion puts the old key back, redeploys
    and escalates.

    Args:
        incident_id: The incident this run belongs to (empty: a manual run of its own)
        dry_run: Check and decide, record the plan, change nothing
        verify_window_s: How long a live completion may take to work after the redeploy
    """
    admin = await OpenAiAdmin.resolve()
    if not admin.configured:
        raise ConfigurationError(
            f"{FLOW}: the OpenAI admin API is not configured (RUNBOOK_OPENAI_ADMIN_KEY,"
            " RUNBOOK_OPENAI_PROJECT_ID); nothing changed"
        )
    run = await IncidentRun.start(FLOW, incident_id, dry_run)
    run.keep_process = True
    if (done := await run.finish_if_resolved()) is not None:
        return done
    policy = run.policy
    rw, api = await asyncio.gather(Railway.resolve(), SupportApi.resolve())
    keys, current, chat = await asyncio.gather(
        openai_admin.get_project_keys(admin),
        railway.get_secret_variable(rw, OPENAI_KEY_VARIABLE),
        post_chat(api),
    )
    chat_ok, chat_summary = verify_completion(chat.ok, chat.http_status, chat.error)
    async with await opsdb.connect() as conn:
        issued = await ledger.last_done(
            conn, ActionName.ISSUE_OPENAI_KEY.value, f"openai:{admin.project_id}"
        )
    replaced = str(issued.params.get("replaces_key") or "") if issued else ""
    unfinished = None
    live = live_keys(keys, current)
    # the replaced key still exists and the app no longer uses it (a restore after a failed
    # verify makes it the app's key again: that rotation ended cleanly)
    if (
        issued
        and issued.incident_id != run.incident_id
        and replaced in {k.id for k in keys}
        and replaced not in live
    ):
        unfinished = f"incident {issued.incident_id} left key {replaced} valid"
    signals = OpenAiKeySignals(
        project_id=admin.project_id,
        keys=keys,
        variable_set=current is not None,
        live_key_ids=live,
        chat_ok=chat_ok,
        chat_summary=chat_summary,
        service_target=f"railway:{rw.service_id}",
        account_name=f"support-api-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        unfinished=unfinished,
    )
    evidence: dict[str, Any] = {
        "project": admin.project_id,
        "project keys": ", ".join(f"{k.id} ({k.owner_type})" for k in keys) or "none",
        "the app's key": ", ".join(signals.live_key_ids) or "not among them",
        "live completion now": chat_summary,
    }
    await run.seen(f"OpenAI project {admin.project_id}: {len(keys)} key(s)", **evidence)
    decision = decide(signals, policy)
    await run.decided(decision.act, decision.why)
    if decision.act == "refuse":
        target = f"openai:{admin.project_id}"
        return await refuse(run, ActionName.ISSUE_OPENAI_KEY, target, "refuse", decision.why)
    platform = Platform(railway=rw, openai_admin=admin)
    if run.dry_run:
        for change in decision.specs:
            await run.act_spec(change, platform, evidence)
        return await run.finish(decision.act, decision.why, verified=None, summary=decision.why)
    assert current is not None  # decide() refuses without it
    return await _rotate(run, decision, platform, api, current, evidence, verify_window_s)


async def _rotate(
    run: IncidentRun,
    decision: Decision,
    platform: Platform,
    api: SupportApi,
    old_value: SecretStr,
    evidence: dict[str, Any],
    window_s: float,
) -> RemediationResult:
    issue, redeploy, revoke = decision.specs
    rw, admin = platform.railway, platform.need_openai_admin()

    def not_done(why: str) -> str:
        return f"NOT done — {why}"

    issued = await run.act_spec(issue, platform, evidence)
    if issued.status != "done":
        why = f"issue_openai_key {issued.status}: {issued.detail or 'no change'}; old key in use"
        if not issued.paged:
            await run.escalate(f"{FLOW}: {why}")
        return await run.finish(decision.act, decision.why, verified=None, summary=not_done(why))
    account = str(issued.outcome.get("service_account_id") or "")

    async def put_back(redeploy_too: bool) -> dict[str, Any]:
        """The old key back in the variable (and running, after a redeploy); the new service
        account retired. Raises a secret-free error when a step fails."""
        await railway.set_secret_variable(rw, OPENAI_KEY_VARIABLE, old_value, skip_deploys=True)
        done: dict[str, Any] = {"restored": OPENAI_KEY_VARIABLE}
        if redeploy_too:
            live = await railway.get_service_instance(rw)
            if not live.latest_deployment_id:
                raise PermanentError("railway: no live deployment to redeploy")
            applied = await railway.redeploy_service(rw, live.latest_deployment_id)
            done["redeployed"] = applied.new_deployment_id
        if account:
            done["retired"] = await openai_admin.delete_service_account(admin, account)
        return done

    deployed = await run.act_spec(redeploy, platform, evidence)
    if deployed.status != "done":
        try:
            await put_back(redeploy_too=False)
            back = "the old key was put back before anything ran on the new one"
        except RunbookError as exc:
            back = f"putting the old key back FAILED ({exc}): a human must set it"
        why = f"redeploy_service {deployed.status}: {deployed.detail or 'no change'}; {back}"
        await run.escalate(f"{FLOW}: {why}")
        return await run.finish(decision.act, decision.why, verified=None, summary=not_done(why))

    await asyncio.sleep(1.0)  # the new deployment takes traffic
    works = await verify_or_undo(
        run.request_for(redeploy, evidence),
        verify=lambda: _completion(api),
        undo=lambda: put_back(redeploy_too=True),
        page=page,
        window_s=window_s,
        interval_s=2.0,
    )
    if not works.verified:
        back = (
            "the old key was put back, the service redeployed and the new service account retired"
            if works.undone
            else "putting the old key back FAILED: a human must restore OPENAI_API_KEY"
        )
        why = f"the new OpenAI key did not work ({works.detail}); {back}"
        await run.escalate(f"{FLOW}: {why}")
        return await run.finish(decision.act, decision.why, verified=False, summary=why)

    old_id = str(revoke.params["key_id"])

    async def old_still_listed() -> bool:  # re-checked after the approval
        return any(k.id == old_id for k in await openai_admin.get_project_keys(admin))

    revoked = await run.act_spec(revoke, platform, evidence, still_needed=old_still_listed)
    if revoked.status not in {"done", "skipped"}:
        why = (
            f"revoke_openai_key {revoked.status}: {revoked.detail or 'no change'}; the app runs"
            f" on the new key, the old key {old_id} is still valid"
        )
        if not revoked.paged:
            await run.escalate(f"{FLOW}: {why}")
        return await run.finish(decision.act, decision.why, verified=None, summary=not_done(why))

    async def gone() -> tuple[bool, str]:
        ids = [k.id for k in await openai_admin.get_project_keys(admin)]
        ok, _ = await _completion(api)
        return verify_old_revoked(old_id, ids, ok)

    checked = await verify_or_undo(
        run.request_for(revoke, evidence), verify=gone, page=page, window_s=window_s, interval_s=2.0
    )
    return await run.finish(
        decision.act,
        decision.why,
        verified=checked.verified,
        summary=f"new service account {account} in use (live completion ok); old key {old_id}"
        f" revoked; {checked.detail}",
    )
