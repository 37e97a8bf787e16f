"""docs/runbook-map.md — every runbook line → the flow that does it, or `human` — stays complete:
a flow added to the registry, a deployment added to prefect.yaml, or a runbook section dropped
from the map shows up here. The runbook itself lives outside this repository, so its section
headings are copied below (REQUIRED_SECTIONS); the map is the source for everything else."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.registry import FLOWS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "runbook-map.md"
PREFECT_YAML = ROOT / "prefect.yaml"

COLUMNS = ("runbook line", "flow", "step / act", "notes")
HUMAN = "human"

# The runbook's `##` / `###` headings, in its order (RUNBOOK.md "Operations Runbook").
REQUIRED_SECTIONS: tuple[str, ...] = (
    "## Quick Reference",
    "## Health Checks",
    "### Check Service Status",
    "### Check Database",
    "### Check Redis",
    "## Incident Response",
    "### 1. High Error Rate (>1%)",
    "### 2. High Latency (P99 > 10s)",
    "### 3. LLM Provider Issues",
    "### 4. Database Connection Issues",
    "### 5. Complete Outage",
    "## Deployment Procedures",
    "### Standard Deployment",
    "### Manual Deployment",
    "### Rollback",
    "### Database Migrations",
    "## Scaling Procedures",
    "### Horizontal Scaling (Replicas)",
    "### Vertical Scaling (Resources)",
    "### Database Scaling",
    "## Monitoring & Alerts",
    "### Key Metrics to Watch",
    "### Alert Channels",
    "### Dashboard Links",
    "## Security Procedures",
    "### Rotate API Keys",
    "### Security Incident Response",
    "## Maintenance Windows",
    "### Scheduled Maintenance",
    "### Emergency Maintenance",
    "## Contacts",
)

_HEADING = re.compile(r"^(#{2,3}) (\S.*?)\s*$")
_FLOW_NAME = re.compile(r"^`([a-z0-9-]+)`$")
_SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


@dataclass(frozen=True)
class Row:
    section: str  # the heading above it, e.g. "### Rollback"
    line_no: int
    cells: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"docs/runbook-map.md:{self.line_no} ({self.section})"


@dataclass(frozen=True)
class RunbookMap:
    headings: tuple[str, ...]
    rows: tuple[Row, ...]
    problems: tuple[str, ...]  # format problems found while parsing


def split_row(line: str) -> tuple[str, ...]:
    """The cells of a markdown table row (`\\|` is a pipe inside a cell)."""
    inner = line.strip()[1:]
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return tuple(cell.replace("\\|", "|").strip() for cell in re.split(r"(?<!\\)\|", inner))


def parse_map(text: str) -> RunbookMap:
    """Headings and table rows of the map; every table must have exactly the four columns."""
    headings: list[str] = []
    rows: list[Row] = []
    problems: list[str] = []
    section = ""
    expect = "header"  # header -> separator -> rows, per table
    for number, line in enumerate(text.splitlines(), start=1):
        heading = _HEADING.match(line)
        if heading:
            section = f"{heading.group(1)} {heading.group(2)}"
            headings.append(section)
            expect = "header"
            continue
        if not line.startswith("|"):  # a blank or text line ends a table
            expect = "header"
            continue
        cells = split_row(line)
        if expect == "header":
            if cells != COLUMNS:
                problems.append(f"line {number}: table header {cells}, expected {COLUMNS}")
            expect = "separator"
        elif expect == "separator":
            if not _SEPARATOR.match(line.strip()):
                problems.append(f"line {number}: expected the |---| line under the header")
            expect = "rows"
        elif len(cells) != len(COLUMNS):
            problems.append(f"line {number}: {len(cells)} cells, expected {len(COLUMNS)}")
        elif not section:
            problems.append(f"line {number}: a table row before any runbook section heading")
        else:
            rows.append(Row(section=section, line_no=number, cells=cells))
    return RunbookMap(tuple(headings), tuple(rows), tuple(problems))


def flows_of(row: Row) -> list[str] | None:
    """The flow names in the flow cell; [] for `human`; None when the cell is malformed."""
    cell = row.cells[1]
    if cell == HUMAN:
        return []
    names = [_FLOW_NAME.match(part.strip()) for part in cell.split(",")]
    if not all(names):
        return None
    return [m.group(1) for m in names if m]


def mapped_flows(doc: RunbookMap) -> set[str]:
    return {name for row in doc.rows for name in flows_of(row) or []}


# -- the checks, as functions of the map's text so each one is shown to fail below -------------
def format_problems(doc: RunbookMap) -> list[str]:
    problems = list(doc.problems)
    for row in doc.rows:
        if not row.cells[0]:
            problems.append(f"{row.where}: empty runbook line")
        if flows_of(row) is None:
            problems.append(
                f"{row.where}: flow cell {row.cells[1]!r} is neither `human` nor backticked"
                " flow names separated by commas"
            )
        elif flows_of(row) == [] and not row.cells[3]:
            problems.append(f"{row.where}: `human` without a reason in the notes")
    return problems


def unmapped_flow_problems(doc: RunbookMap, flows: dict[str, str]) -> list[str]:
    covered = mapped_flows(doc)
    return [
        f"flow {name!r} has no line in the runbook map" for name in flows if name not in covered
    ]


def unknown_flow_problems(doc: RunbookMap, flows: dict[str, str]) -> list[str]:
    return [
        f"{row.where}: names flow {name!r}, which flows/registry.py does not know"
        for row in doc.rows
        for name in flows_of(row) or []
        if name not in flows
    ]


def deployment_problems(
    doc: RunbookMap, flows: dict[str, str], prefect_yaml: dict[str, Any]
) -> list[str]:
    """Every deployment's entrypoint is a registered flow that the map covers."""
    by_target = {target: name for name, target in flows.items()}
    covered = mapped_flows(doc)
    problems = []
    for deployment in prefect_yaml.get("deployments") or []:
        entrypoint = str(deployment.get("entrypoint", ""))
        file, _, function = entrypoint.partition(":")
        name = by_target.get(file.removesuffix(".py").replace("/", ".") + ":" + function)
        if name is None:
            problems.append(f"prefect.yaml deployment {entrypoint!r} runs no registered flow")
        elif name not in covered:
            problems.append(f"prefect.yaml deploys {name!r} ({entrypoint}), not in the map")
    return problems


def section_problems(doc: RunbookMap, required: tuple[str, ...]) -> list[str]:
    """The map's headings are exactly the runbook's, and every innermost one has rows."""
    problems = [
        f"runbook section {h!r} is missing from the map" for h in required if h not in doc.headings
    ]
    problems += [
        f"{h!r} is not a runbook section heading" for h in doc.headings if h not in required
    ]
    problems += [
        f"{h!r} appears twice" for h in sorted(set(doc.headings)) if doc.headings.count(h) > 1
    ]
    with_rows = {row.section for row in doc.rows}
    for index, heading in enumerate(doc.headings):
        following = doc.headings[index + 1] if index + 1 < len(doc.headings) else None
        parent = following is not None and following.startswith(heading.split(" ")[0] + "#")
        if not parent and heading not in with_rows:
            problems.append(f"runbook section {heading!r} has no mapped line")
    return problems


# -- the real map ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runbook_map() -> RunbookMap:
    return parse_map(MAP.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_line_of_the_map_reads_as_flow_or_human(runbook_map: RunbookMap) -> None:
    assert runbook_map.rows, "the map has no table rows"
    assert format_problems(runbook_map) == []


def test_every_flow_has_a_line_in_the_runbook_map(runbook_map: RunbookMap) -> None:
    assert unmapped_flow_problems(runbook_map, FLOWS) == []


def test_the_map_names_only_flows_that_exist(runbook_map: RunbookMap) -> None:
    assert unknown_flow_problems(runbook_map, FLOWS) == []


def test_every_deployed_flow_is_in_the_runbook_map(
    runbook_map: RunbookMap, prefect_yaml: dict[str, Any]
) -> None:
    assert prefect_yaml.get("deployments"), "prefect.yaml declares no deployments"
    assert deployment_problems(runbook_map, FLOWS, prefect_yaml) == []


def test_every_runbook_section_is_mapped(runbook_map: RunbookMap) -> None:
    assert section_problems(runbook_map, REQUIRED_SECTIONS) == []


# -- each check fails on a deliberately broken copy of the map -------------------------------
def _drop_rows_of(flow: str) -> Callable[[str], str]:
    """Every row whose flow cell names `flow` is deleted."""

    def edit(text: str) -> str:
        kept = []
        for line in text.splitlines():
            cells = split_row(line) if line.startswith("|") else ()
            if len(cells) > 1 and f"`{flow}`" in cells[1]:
                continue
            kept.append(line)
        return "\n".join(kept)

    return edit


def _empty_section(heading: str) -> Callable[[str], str]:
    """The heading stays; the table under it goes."""

    def edit(text: str) -> str:
        kept, inside = [], False
        for line in text.splitlines():
            if _HEADING.match(line):
                inside = line.strip() == heading
            elif inside and line.startswith("|"):
                continue
            kept.append(line)
        return "\n".join(kept)

    return edit


def _replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"the mutation expects {old!r} in the map"
        return text.replace(old, new, 1)

    return edit


BREAKAGES: dict[str, tuple[Callable[[str], str], str]] = {
    "a registry flow loses its rows": (_drop_rows_of("rollback"), "unmapped"),
    "a misspelt flow name": (_replace_once("| `high-latency` |", "| `high-latencyy` |"), "unknown"),
    "a scheduled flow disappears": (_drop_rows_of("metrics-watch"), "deployments"),
    "a runbook section is removed": (_replace_once("### Check Redis\n", ""), "sections"),
    "a section is added that the runbook lacks": (
        lambda text: text + "\n## Appendix\n",
        "sections",
    ),
    "a section keeps its heading but loses its lines": (
        _empty_section("### Check Redis"),
        "sections",
    ),
    "a human line without a reason": (
        _replace_once(
            "| human | — | not automated: no support-ticket source is read |",
            "| human | — |  |",
        ),
        "format",
    ),
    "a flow cell that is neither": (
        _replace_once("| `rds-resize` |", "| rds-resize |"),
        "format",
    ),
    "a row with a cell missing": (_replace_once("| `rds-resize` |", "|"), "format"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_map_is_caught(breakage: str, prefect_yaml: dict[str, Any]) -> None:
    edit, check = BREAKAGES[breakage]
    broken = parse_map(edit(MAP.read_text(encoding="utf-8")))
    problems = {
        "format": lambda: format_problems(broken),
        "unmapped": lambda: unmapped_flow_problems(broken, FLOWS),
        "unknown": lambda: unknown_flow_problems(broken, FLOWS),
        "deployments": lambda: deployment_problems(broken, FLOWS, prefect_yaml),
        "sections": lambda: section_problems(broken, REQUIRED_SECTIONS),
    }[check]()
    assert problems, f"{breakage}: the {check} check did not notice"
