"""The incident timeline artifact: seen → decided → approved by → done → verified.

What the on-call engineer would otherwise write by hand, left as markdown in the Prefect UI and
linked from every notification.
"""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact

from runbook import ledger, opsdb

_ICON = {
    "seen": "👀",
    "decided": "🧭",
    "planned": "📝",
    "approved": "✅",
    "rejected": "⛔",
    "refused": "🛑",
    "skipped": "⏭️",
    "done": "🔧",
    "failed": "❌",
    "verified": "✔️",
    "undone": "↩️",
    "escalated": "📟",
    "resumed": "▶️",
    "notified": "💬",
    "finished": "🏁",
}


def render(incident_id: str, title: str, events: list[ledger.TimelineEvent]) -> str:
    lines = [
        f"# {title}",
        "",
        f"Incident `{incident_id}`",
        "",
        "| time (UTC) | step | what |",
        "|---|---|---|",
    ]
    for e in events:
        what = e.summary.replace("|", "\\|").replace("\n", " ")
        icon = _ICON.get(e.kind, "•")
        lines.append(f"| {e.at:%H:%M:%S} | {icon} {e.kind} | {what} |")
    if not events:
        lines.append("| | | nothing recorded |")
    return "\n".join(lines)


async def publish(incident_id: str, title: str) -> str:
    """Write the incident's timeline (and the alert context the intake recorded: sources,
    duplicates, counts) as a markdown artifact; returns the markdown."""
    from runbook.incidents import get_incident

    async with await opsdb.connect() as conn:
        events = await ledger.timeline(conn, incident_id)
        incident = await get_incident(conn, incident_id)
    markdown = render(incident_id, title, events)
    if incident is not None:
        markdown += "\n\n" + incident.to_markdown()
    key = "timeline-" + "".join(ch if ch.isalnum() else "-" for ch in incident_id.lower())
    await acreate_markdown_artifact(
        key=key[:100], markdown=markdown, description=f"Incident timeline: {title}"
    )
    return markdown


async def note(incident_id: str, kind: str, summary: str, **detail: object) -> None:
    """Add one line to the incident's timeline (seen, decided, verified, notified …)."""
    async with await opsdb.connect() as conn:
        await ledger.event(conn, incident_id, kind, summary, detail=dict(detail))
