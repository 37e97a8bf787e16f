"""The routing table (configuration, `routes.yaml`) and `route()`: alert → placement. Pure.

The table is data: which flow handles which alerts, what the target and group of an incident
are. `load_table()` reads and validates it once: bad regexes and routes to a flow that is not in
`KNOWN_FLOWS` fail at start-up, not per alert.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runbook.alerts import Alert
from runbook.errors import ConfigurationError
from runbook.incidents import Placement

BUNDLED = Path(__file__).with_name("routes.yaml")

# Every flow a route may name. Intake must not import `flows` (it sits below them), so the names
# are listed here; tests/intake checks that every flow of `flows.registry.FLOWS` is in it.
BUILT_FLOWS = frozenset(
    {
        "health-check",
        "high-error-rate",
        "high-latency",
        "llm-provider",
        "database-connections",
        "complete-outage",
        "scale-replicas",
        "scale-vertical",
        "rds-resize",
        "deploy-watch",
        "manual-deploy",
        "rollback",
        "db-migrate",
        "db-downgrade",
        "rotate-store-key",
        "rotate-openai-key",
        "security-incident",
        "metrics-watch",
        "maintenance-notice",
        "scheduled-maintenance",
        "emergency-maintenance",
    }
)
# Runbook sections the table already routes to whose flow is not built yet. Their alerts are
# accepted and persisted; dispatching finds no deployment, so the dispatcher finishes the row,
# posts a triage message to Slack and pages PagerDuty (a human is told, nothing loops).
PLANNED_FLOWS: frozenset[str] = frozenset()
KNOWN_FLOWS = BUILT_FLOWS | PLANNED_FLOWS

# bytes, not characters: (route, target, group) is one index entry, which holds at most ~2.7 kB
_TARGET_BYTES = 200
_GROUP_BYTES = 500


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = None
    name: str | None = None
    source: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("text", "name")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @cached_property
    def _text(self) -> re.Pattern[str] | None:
        return re.compile(self.text, re.IGNORECASE) if self.text else None

    @cached_property
    def _name(self) -> re.Pattern[str] | None:
        return re.compile(self.name, re.IGNORECASE) if self.name else None

    @cached_property
    def _labels(self) -> dict[str, re.Pattern[str]]:
        return {k: re.compile(v, re.IGNORECASE) for k, v in self.labels.items()}

    def matches(self, alert: Alert) -> bool:
        if self.source is not None and alert.source != self.source:
            return False
        if self._name is not None and not self._name.search(alert.name):
            return False
        if self._text is not None and not self._text.search(alert.text()):
            return False
        return all(
            key in alert.labels and pattern.search(alert.labels[key])
            for key, pattern in self._labels.items()
        )


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    flow: str | None = Field(None, description="Prefect flow name; none = notify only")
    target: str = "unknown"
    match: tuple[Matcher, ...] = ()
    suppress_in_maintenance: bool = True
    notify: tuple[Literal["slack"], ...] = ()
    group_by: tuple[str, ...] | None = None


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    explicit_label: str | None = "runbook"
    target_labels: tuple[str, ...] = ("target",)
    group_labels: tuple[str, ...] = ("environment", "env")
    default_group: str = ""
    routes: tuple[Route, ...]
    fallback: Route

    def by_name(self, name: str) -> Route | None:
        return next((r for r in (*self.routes, self.fallback) if r.name == name), None)


def parse_table(text: str, *, origin: str = "routing table") -> RoutingTable:
    """Validate a routing table given as YAML text."""
    try:
        data = yaml.safe_load(text)
        table = RoutingTable.model_validate(data)
    except (yaml.YAMLError, ValidationError, re.error) as exc:
        first = str(exc).splitlines()
        raise ConfigurationError(f"{origin} is invalid: {' '.join(first[:3])}") from None
    names = [r.name for r in (*table.routes, table.fallback)]
    if len(names) != len(set(names)):
        raise ConfigurationError(f"{origin} is invalid: route names must be unique")
    for entry in (*table.routes, table.fallback):
        if entry.flow is not None and entry.flow not in KNOWN_FLOWS:
            raise ConfigurationError(
                f"{origin} is invalid: route {entry.name!r} names unknown flow {entry.flow!r}"
                f" (known flows: {', '.join(sorted(KNOWN_FLOWS))})"
            )
    return table


def load_table(path: Path | None = None) -> RoutingTable:
    """The table in `path`, else the bundled `intake/routes.yaml`."""
    source = path or BUNDLED
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read routing table {source}: {exc.strerror}") from None
    return parse_table(text, origin=str(source))


def select_route(table: RoutingTable, alert: Alert) -> Route:
    """The first route whose matchers hold; an explicit `runbook` label wins; else fallback."""
    if table.explicit_label:
        wanted = alert.labels.get(table.explicit_label)
        chosen = table.by_name(wanted) if wanted else None
        if chosen is not None:
            return chosen
    for route in table.routes:
        if any(m.matches(alert) for m in route.match):
            return route
    return table.fallback


class Router:
    """`route()` with a memo: a storm repeats the same few alerts, so the regexes run once each.

    Keyed by everything `route()` reads (source, name, summary, labels); bounded.
    """

    def __init__(self, table: RoutingTable, *, deployment: str, size: int = 4096) -> None:
        self.table = table
        self.deployment = deployment
        self.size = size
        self._memo: dict[tuple[object, ...], Placement] = {}

    def __call__(self, alert: Alert) -> Placement:
        key = (alert.source, alert.name, alert.summary, *sorted(alert.labels.items()))
        placement = self._memo.get(key)
        if placement is None:
            placement = route(self.table, alert, deployment=self.deployment)
            if len(self._memo) >= self.size:
                self._memo.clear()
            self._memo[key] = placement
        return placement


def clip_bytes(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, cut at a character boundary."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _label(alert: Alert, key: str) -> str:
    if key == "alertname":
        return alert.labels.get("alertname") or alert.name
    return alert.labels.get(key, "")


def route(table: RoutingTable, alert: Alert, *, deployment: str = "runbook") -> Placement:
    """Where `alert` goes: route, flow, incident key, and what to dispatch for a new incident."""
    chosen = select_route(table, alert)
    target = next(
        (alert.labels[k] for k in table.target_labels if alert.labels.get(k)), chosen.target
    )
    group_by = chosen.group_by if chosen.group_by is not None else table.group_labels
    if chosen.group_by is not None:
        group = "|".join(_label(alert, k) for k in group_by)
    else:
        group = next((_label(alert, k) for k in group_by if _label(alert, k)), "")
    actions: list[tuple[str, str]] = []
    if chosen.flow:
        actions.append(("flow", f"{chosen.flow}/{deployment}"))
    actions.extend((kind, "") for kind in chosen.notify)
    return Placement(
        route=chosen.name,
        flow=chosen.flow,
        target=clip_bytes(target, _TARGET_BYTES),
        group_key=clip_bytes(group or table.default_group, _GROUP_BYTES),
        suppressible=chosen.suppress_in_maintenance,
        actions=tuple(actions),
    )
