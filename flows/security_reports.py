"""What `security-incident` leaves for humans: the scope, the access-log lines, the remediation
checklist and the per-store customer notifications — markdown for the Prefect UI, drafts for a
human to send. Pure text builders (no I/O) plus one helper that publishes an artifact.

Nothing here is sent to a customer: drafts go to the run and to our own Security contact.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel, ConfigDict

from tasks.app_keys import AccessLine, Store


class StoreScope(BaseModel):
    """One affected store: the keys the leaked-key pattern implicates, and why."""

    model_config = ConfigDict(frozen=True)

    store_id: str
    key_ids: tuple[int, ...] = ()  # live keys: disabled by the containment
    key_prefixes: tuple[str, ...] = ()
    already_off: tuple[int, ...] = ()  # implicated keys already revoked or disabled
    ips: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    requests: int = 0  # accepted requests of the pattern


class Draft(BaseModel):
    """A customer notification for a human to review and send per policy."""

    model_config = ConfigDict(frozen=True)

    store_id: str
    to: str
    subject: str
    body: str


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def artifact_key(kind: str, incident_id: str) -> str:
    key = f"{kind}-" + "".join(ch if ch.isalnum() else "-" for ch in incident_id.lower())
    return key[:100]


async def publish(kind: str, incident_id: str, markdown: str, description: str) -> None:
    await acreate_markdown_artifact(
        key=artifact_key(kind, incident_id), markdown=markdown, description=description
    )


def scope_markdown(
    scope: Sequence[StoreScope], window_s: int, conversations: dict[str, int], why: str
) -> str:
    lines = [
        "# Security incident: scope",
        "",
        f"Access log of the last {window_s} s. {why}",
        "",
        "| store | keys to disable | already off | addresses | why | conversations in window |",
        "|---|---|---|---|---|---|",
    ]
    for s in scope:
        keys = ", ".join(f"#{i}" for i in s.key_ids) or "none"
        prefixes = ", ".join(f"{p}…" for p in s.key_prefixes)
        off = ", ".join(f"#{i}" for i in s.already_off) or "—"
        ips = _cell(", ".join(s.ips) or "—")
        lines.append(
            f"| {s.store_id} | {keys} ({prefixes}) | {off} | {ips} |"
            f" {_cell('; '.join(s.reasons))} | {conversations.get(s.store_id, 0)} |"
        )
    if not scope:
        lines.append("| — | — | — | — | nothing implicated | — |")
    return "\n".join(lines)


def investigation_markdown(lines: Sequence[AccessLine], stores: Sequence[str]) -> str:
    out = [
        "# Security incident: access log",
        "",
        f"Lines of the window that involve {', '.join(stores) or 'no store'} or the addresses"
        " seen with them (newest first, at most 200).",
        "",
        "| time (UTC) | store | key prefix | address | request | status |",
        "|---|---|---|---|---|---|",
    ]
    for line in lines:
        out.append(
            f"| {line.ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} | {line.store_id or '—'} |"
            f" {line.key_prefix or '—'} | {line.ip} | {_cell(f'{line.method} {line.path}')} |"
            f" {line.status} |"
        )
    if not lines:
        out.append("| — | — | — | — | no lines | — |")
    return "\n".join(out)


def checklist_markdown(scope: Sequence[StoreScope], contained: str, rotated: Sequence[str]) -> str:
    stores = [s.store_id for s in scope]
    ips = sorted({ip for s in scope for ip in s.ips})
    rotate_lines = (
        [f"- [x] new keys issued and delivered to {', '.join(rotated)} (force_rotate)"]
        if rotated
        else [
            f"- [ ] rotate each store's key: `runbook run rotate-store-key --param store_id={s}`"
            for s in stores
        ]
    )
    return "\n".join(
        [
            "# Security incident: remediation checklist",
            "",
            "Patching is not automated: a human works through this list.",
            "",
            f"- [{'x' if contained.startswith('done') else ' '}] contain: disable the affected"
            f" keys — {contained}",
            *rotate_lines,
            f"- [ ] block the addresses at the edge (WAF / firewall): {', '.join(ips) or 'none'}",
            "- [ ] find how the keys leaked (repositories, logs, tickets, the stores' own"
            " systems) and close that path",
            "- [ ] patch the vulnerability; review who else could have read the keys",
            "- [ ] review what the keys reached: conversation exports, customer lists (see the"
            " access-log artifact)",
            "- [ ] send the drafted customer notifications per policy (see the drafts artifact)",
            "- [ ] re-enable nothing until the store confirms its new key works",
            "- [ ] write the post-incident review",
        ]
    )


def customer_drafts(
    scope: Sequence[StoreScope],
    stores: dict[str, Store],
    conversations: dict[str, int],
    window_s: int,
    contained: bool,
) -> list[Draft]:
    """One notification per affected store, addressed to its contact (for a human to send)."""
    drafts = []
    now = datetime.now(UTC)
    for s in scope:
        store = stores.get(s.store_id)
        name = store.name if store else s.store_id
        to = (store.contact_email if store else None) or "(no contact on file)"
        action = (
            "We disabled the affected API key(s) at once"
            if contained
            else "We are disabling the affected API key(s)"
        )
        body = "\n".join(
            [
                f"Hello {name},",
                "",
                f"On {now:%Y-%m-%d} our monitoring found requests made with your store's API"
                f" key ({', '.join(f'{p}…' for p in s.key_prefixes) or 'see below'}) from"
                f" addresses that are not yours ({', '.join(s.ips) or 'unknown'}).",
                "",
                f"{action}. Your integration needs a new key: we will send it to this address"
                " separately.",
                "",
                f"What the key could reach: your store's support conversations ("
                f"{conversations.get(s.store_id, 0)} in the last {window_s // 60} minutes) and"
                " the customer details in them.",
                "",
                "What we ask of you: check where the key was stored, and tell us if you see"
                " activity you do not recognise.",
                "",
                "We are sorry for the trouble. — Security team",
            ]
        )
        drafts.append(
            Draft(
                store_id=s.store_id,
                to=to,
                subject=f"Security notice: your support API key ({s.store_id})",
                body=body,
            )
        )
    return drafts


def drafts_markdown(drafts: Sequence[Draft]) -> str:
    out = [
        "# Security incident: customer notifications (DRAFTS — not sent)",
        "",
        "Review and send each per the notification policy. Nothing here was sent to a customer.",
    ]
    for d in drafts:
        out += ["", f"## {d.store_id}", "", f"**To:** {d.to}", f"**Subject:** {d.subject}", ""]
        out += [f"> {line}" if line else ">" for line in d.body.splitlines()]
    if not drafts:
        out += ["", "No store is affected: nothing to draft."]
    return "\n".join(out)
