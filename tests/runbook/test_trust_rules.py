"""Trust boundary rules as tables: a Policy block can only tighten the environment's floor,
every Policy number is bounded, start-up refuses an unprotected Prefect API, a short approval
secret or an approver without a channel, and nobody approves their own run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from blocks.policy import Floor, Policy
from flows.llm_provider import restore_hold
from runbook.approval import ApprovalInput, check_answer
from runbook.settings import Settings
from runbook.trust import approver_channel_problems, prefect_api_problem

pytestmark = pytest.mark.unit

FLOOR = Floor(
    approvers=["alice", "bob"],
    approver_webhooks={"alice": SecretStr("https://hooks/alice"), "bob": SecretStr("https://b")},
    require_code=True,
    max_replicas=5,
    destructive_budget_per_hour=2,
)


def test_block_approvers_outside_the_floor_are_ignored() -> None:
    effective = Policy(approvers=["mallory", "alice"]).with_floor(FLOOR)
    assert effective.approvers == ["alice"]


def test_block_with_only_outsiders_leaves_nobody_able_to_approve() -> None:
    assert Policy(approvers=["mallory"]).with_floor(FLOOR).approvers == []


def test_block_cannot_turn_codes_off_or_redirect_approver_channels() -> None:
    block = Policy(
        require_code=False, approver_webhooks={"alice": SecretStr("https://attacker/hook")}
    )
    effective = block.with_floor(FLOOR)
    assert effective.require_code is True
    assert effective.approver_webhooks["alice"].get_secret_value() == "https://hooks/alice"


@pytest.mark.parametrize(("allow", "expected"), [(False, False), (True, True)])
def test_auto_approve_needs_the_environment_to_allow_it(allow: bool, expected: bool) -> None:
    floor = FLOOR.model_copy(update={"allow_auto_approve": allow})
    assert Policy(auto_approve=True).with_floor(floor).auto_approve is expected


def test_block_cannot_downgrade_a_destructive_action_or_drop_two_person() -> None:
    block = Policy(
        action_classes={"rollback_deployment": "safe", "failover_db": "read"},
        two_person_actions=[],
        approval_required_for=[],
    )
    effective = block.with_floor(FLOOR)
    assert effective.action_classes["rollback_deployment"] == "destructive"
    assert effective.action_classes["failover_db"] == "destructive"
    assert "modify_db_instance_class" in effective.two_person_actions
    assert "destructive" in effective.approval_required_for


def test_block_may_tighten_caps_and_budgets_but_not_raise_them() -> None:
    looser = Policy(max_replicas=50, destructive_budget_per_hour=100).with_floor(FLOOR)
    assert (looser.max_replicas, looser.destructive_budget_per_hour) == (5, 2)
    tighter = Policy(max_replicas=3, destructive_budget_per_hour=1).with_floor(FLOOR)
    assert (tighter.max_replicas, tighter.destructive_budget_per_hour) == (3, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_replicas", 51),
        ("max_replicas", 0),
        ("max_pool_size", 501),
        ("destructive_budget_per_hour", -1),
        ("mutation_budget_per_hour", -1),
        ("approval_timeout_s", 59),
        ("approval_valid_s", 30),
        ("rollback_error_rate_pct", 0),
        ("rollback_error_rate_pct", 101),
        ("recent_window_s", 5),
    ],
)
def test_policy_numbers_out_of_bounds_are_refused_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as info:
        Policy(**{field: value})
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("metric", "warn", "critical"),
    [("error_rate_pct", -1.0, 2.0), ("error_rate_pct", 0.5, 150.0), ("p99_latency_s", -5, 10)],
)
def test_thresholds_out_of_bounds_are_refused_naming_the_metric(
    metric: str, warn: float, critical: float
) -> None:
    with pytest.raises(ValidationError) as info:
        Policy(thresholds={metric: {"warn": warn, "critical": critical}})
    assert f"thresholds.{metric}" in str(info.value)


@pytest.mark.parametrize(
    ("url", "auth", "key", "refused"),
    [
        ("http://127.0.0.1:4200/api", None, None, False),
        ("http://localhost:4200/api", None, None, False),
        ("http://[::1]:4200/api", None, None, False),
        ("https://prefect.example.com/api", None, None, True),
        ("http://10.0.0.5:4200/api", None, None, True),
        ("https://prefect.example.com/api", "admin:pass", None, False),
        ("https://api.prefect.cloud/api/accounts/x", None, "pnu_key", False),
        (None, None, None, False),
    ],
)
def test_remote_prefect_api_without_auth_is_refused(
    url: str | None, auth: str | None, key: str | None, refused: bool
) -> None:
    problem = prefect_api_problem(url, auth, key)
    assert (problem is not None) is refused
    if refused:
        assert "--insecure-prefect-api" in problem  # type: ignore[operator]


def test_coded_approver_without_own_channel_is_a_configuration_error() -> None:
    settings = Settings(approvers="alice,bob", approver_webhooks={"alice": "https://hooks/alice"})  # type: ignore[arg-type]
    problems = approver_channel_problems(settings)
    assert problems == [
        "approver bob has no channel of their own: add it to RUNBOOK_APPROVER_WEBHOOKS"
    ]


def test_the_person_who_asked_for_the_run_cannot_approve_it() -> None:
    answer = ApprovalInput(approve=True, approver="Alice", reason="mine")
    why = check_answer(
        answer, allowed=["alice", "bob"], already=[], code_ok=True, requested_by="alice"
    )
    assert why is not None and "cannot approve its own act" in why
    other = ApprovalInput(approve=True, approver="bob", reason="ok")
    assert (
        check_answer(
            other, allowed=["alice", "bob"], already=[], code_ok=True, requested_by="alice"
        )
        is None
    )


@pytest.mark.parametrize(
    ("age", "interval", "held"),
    [
        (None, 300, False),
        (10.0, 300, True),
        (299.0, 300, True),
        (301.0, 300, False),
        (5.0, 0, False),
    ],
)
def test_switching_back_to_the_primary_waits_for_the_hysteresis(
    age: float | None, interval: int, held: bool
) -> None:
    assert (restore_hold(age, interval) is not None) is held


def _runbook(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PREFECT_API"))}
        | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


GOOD = {
    "PREFECT_API_URL": "http://127.0.0.1:9/api",
    "RUNBOOK_APPROVERS": "alice",
    "RUNBOOK_APPROVER_WEBHOOKS": '{"alice": "http://127.0.0.1:9/hook"}',
    "RUNBOOK_APPROVAL_SECRET": "x" * 32,
}


@pytest.mark.parametrize(
    ("verb", "env", "says"),
    [
        (["serve"], {"PREFECT_API_URL": "https://prefect.example.com/api"}, "not on loopback"),
        (["sweep"], {"PREFECT_API_URL": "https://prefect.example.com/api"}, "not on loopback"),
        (["intake"], {"PREFECT_API_URL": "https://prefect.example.com/api"}, "not on loopback"),
        (["serve"], {"RUNBOOK_APPROVAL_SECRET": "short"}, "at least 32"),
        (["sweep"], {"RUNBOOK_APPROVAL_SECRET": ""}, "RUNBOOK_APPROVAL_SECRET is not set"),
        (["serve"], {"RUNBOOK_APPROVER_WEBHOOKS": "{}"}, "approver alice has no channel"),
    ],
)
def test_long_lived_processes_refuse_to_start_with_one_clear_line(
    verb: list[str], env: dict[str, str], says: str, tmp_path: Path
) -> None:
    result = _runbook(verb, GOOD | {"RUNBOOK_HOME": str(tmp_path)} | env)
    assert result.returncode == 64, result.stdout + result.stderr
    assert "refusing to start" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # one (wrapped) line
