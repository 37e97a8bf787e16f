"""Text for Slack messages: escape what others wrote before it is posted.

Slack reads `<…>` in message text as control sequences: `<!channel>`, `<!here>` and
`<!everyone>` notify a whole channel, `<@U123>` mentions a person, `<http://…|label>` shows a
link under any label. Alert titles, summaries and labels come from whoever can send an alert, so
they are escaped the way Slack documents ("Escaping text"): `&` → `&amp;`, `<` → `&lt;`,
`>` → `&gt;`. Escaped text shows exactly what was sent and triggers nothing. Our own markup
(`*bold*`, emoji, our links) is added around escaped text, never inside it.

Core module: pure, imports nothing of ours.
"""

from __future__ import annotations

__all__ = ["clip", "escape"]

_TABLE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape(text: str) -> str:
    """`text` safe to embed in a Slack message: no mention, broadcast or link survives."""
    return text.translate(_TABLE)


def clip(escaped: str, limit: int) -> str:
    """At most `limit` characters of already escaped text, never cutting an entity in half
    (a cut `&am` would show as garbage); an ellipsis marks the cut."""
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"
