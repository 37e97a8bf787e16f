"""`runbook.slack_text.escape`: alert text reaches Slack as text, never as a mention or link."""

from __future__ import annotations

import pytest

from runbook.slack_text import clip, escape

pytestmark = pytest.mark.unit

CASES = [
    ("plain text", "plain text"),
    ("", ""),
    ("a & b", "a &amp; b"),
    ("<!channel> deploy", "&lt;!channel&gt; deploy"),
    ("<!here>", "&lt;!here&gt;"),
    ("<!everyone> look", "&lt;!everyone&gt; look"),
    ("ping <@U123ABC>", "ping &lt;@U123ABC&gt;"),
    ("<#C024BE7LR|general>", "&lt;#C024BE7LR|general&gt;"),
    ("<http://evil.example|click>", "&lt;http://evil.example|click&gt;"),
    ("<!subteam^S123>", "&lt;!subteam^S123&gt;"),
    ("p99 > 10s < 20s", "p99 &gt; 10s &lt; 20s"),
    # `&` first: an already escaped entity is shown as typed, not decoded by Slack
    ("&lt;!channel&gt;", "&amp;lt;!channel&amp;gt;"),
    ("<!channel> deploy & <http://x|y>", "&lt;!channel&gt; deploy &amp; &lt;http://x|y&gt;"),
    ("*bold* _it_ `code` :fire: ✓", "*bold* _it_ `code` :fire: ✓"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_escape_table(text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize("text", [c[0] for c in CASES])
def test_escaped_text_has_no_control_sequence_left(text: str) -> None:
    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    # and nothing is lost: Slack shows the original text
    unescaped = escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == text


def test_core_module_imports_nothing_of_ours() -> None:
    import ast
    from pathlib import Path

    import runbook.slack_text as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported <= {"__future__"}, imported


CLIPS = [
    ("short", 10, "short"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcdefghi…"),
    ("abcdef&amp;xyz", 10, "abcdef…"),  # would cut "&amp;" after "&am"
    ("abcd&amp;xyz", 10, "abcd&amp;…"),  # the entity fits whole
    ("&lt;!channel&gt;", 5, "&lt;…"),
    ("&lt;!channel&gt;", 4, "…"),
]


@pytest.mark.parametrize(("text", "limit", "expected"), CLIPS)
def test_clip_never_cuts_an_entity(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected
    assert len(clip(text, limit)) <= limit
