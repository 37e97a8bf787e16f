"""Schedules live in one place: `prefect.yaml`. `runbook serve` serves every flow with exactly
the schedules the file declares, and every flow has a deployment there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.registry import FLOWS
from flows.serve import build_deployments, prefect_yaml_path, schedules_from_yaml

pytestmark = pytest.mark.unit


def test_every_flow_has_a_deployment_in_prefect_yaml() -> None:
    data = yaml.safe_load(prefect_yaml_path().read_text())
    entrypoints = {
        d["entrypoint"].replace("/", ".").replace(".py:", ":") for d in data["deployments"]
    }
    assert {target for target in FLOWS.values()} <= entrypoints


async def test_serve_uses_the_schedules_of_prefect_yaml() -> None:
    served = {
        d.flow_name: [s.schedule.cron for s in d.schedules or []] for d in await build_deployments()
    }
    declared = {name: [c.cron for c in crons] for name, crons in schedules_from_yaml().items()}
    assert served == {name: declared.get(name, []) for name in FLOWS}
    assert served["metrics-watch"] == ["* * * * *"]
    assert served["health-check"] == [], "the health check is on demand; metrics-watch watches"


def test_an_edited_prefect_yaml_changes_what_serve_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(prefect_yaml_path().read_text())
    for deployment in data["deployments"]:
        if deployment["entrypoint"].endswith(":health_check"):
            deployment["schedules"] = [{"cron": "0 * * * *", "timezone": "UTC"}]
    edited = tmp_path / "prefect.yaml"
    edited.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("RUNBOOK_PREFECT_YAML", str(edited))
    assert [c.cron for c in schedules_from_yaml()["health-check"]] == ["0 * * * *"]
