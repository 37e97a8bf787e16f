"""Escalation to the runbook's contacts: "contact OpenAI / Railway support" becomes a drafted
message (an artifact on the run, and a copy to the ops mailbox) and a page — a human sends it or
confirms; nothing here pretends to talk to a vendor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import acreate_markdown_artifact

from blocks.contacts import Contacts
from flows.notifications import notify_email
from runbook import slack_text


def support_draft(
    contact_name: str, address: str | None, subject: str, why: str, evidence: dict[str, Any]
) -> str:
    """The message a human would write to a vendor's support, with the evidence as text."""
    lines = [
        f"# Draft for {contact_name}",
        "",
        f"**To:** {address or '(no address on file: see the Contacts block)'}",
        f"**Subject:** {subject}",
        "",
        "Hello,",
        "",
        f"{why}",
        "",
        f"First seen by our automation at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC.",
        "",
        "What we observed:",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in evidence.items()]
    lines += ["", "Could you confirm whether this is on your side, and an ETA?", "", "Thank you"]
    return "\n".join(lines)


async def request_support(
    incident_id: str,
    role: str,
    subject: str,
    why: str,
    evidence: dict[str, Any],
) -> str:
    """Draft the support request for `role` (Contacts block), publish it on the run, mail it to
    the ops mailbox; returns the one line the page should carry."""
    contacts = await Contacts.resolve()
    contact = contacts.contact_for(role)
    draft = support_draft(contact.name, contact.address, subject, why, evidence)
    await acreate_markdown_artifact(
        key=f"support-draft-{contact.role}".lower().replace("_", "-"),
        markdown=draft,
        description=f"Drafted message to {contact.name} for incident {incident_id}",
    )
    await notify_email(f"[draft to send: {contact.name}] {subject}", draft)
    where = f" ({contact.address})" if contact.address else ""
    return slack_text.escape(
        f"contact {contact.name}{where}: a drafted message is on the run and in the ops mailbox"
    )
