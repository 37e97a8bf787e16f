"""Pure pieces: the rollback choice, the embedded-store choice, LangSmith's filter language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.langsmith import FilterError, parse_filter
from sandbox.local.embedded import postgres_url, redis_url
from tasks.railway import Deployment, last_known_good

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def dep(n: int, status: str = "SUCCESS", can_rollback: bool = True) -> Deployment:
    return Deployment(
        id=f"d{n}",
        status=status,
        created_at=T0 + timedelta(hours=n),
        can_rollback=can_rollback,
        can_redeploy=True,
    )


@pytest.mark.parametrize(
    ("deployments", "current", "expected"),
    [
        ([dep(1), dep(2), dep(3)], "d3", "d2"),
        ([dep(1), dep(2, "FAILED", False), dep(3)], "d3", "d1"),
        ([dep(1), dep(2, can_rollback=False), dep(3)], "d3", "d1"),
        ([dep(1), dep(2), dep(3)], "d2", "d1"),  # never forward to a newer one
        ([dep(1, can_rollback=False), dep(2)], "d2", None),
        ([dep(3), dep(1), dep(2)], "d3", "d2"),  # order of the list does not matter
    ],
)
def test_last_known_good(deployments: list[Deployment], current: str, expected: str | None) -> None:
    found = last_known_good(deployments, current)
    assert (found.id if found else None) == expected


def test_embedded_urls_return_the_preferred_url_untouched(tmp_path: Path) -> None:
    assert postgres_url("postgresql://u@db:5432/x", tmp_path) == "postgresql://u@db:5432/x"
    assert redis_url("redis://cache:6379/2", tmp_path) == "redis://cache:6379/2"


def test_langsmith_filter_language() -> None:
    run = {"run_type": "llm", "start_time": 0.0, "end_time": 6.5, "error": None, "tags": ["x"]}
    assert parse_filter('and(eq(run_type, "llm"), gt(latency, 5))')(run)
    assert not parse_filter("neq(error, null)")(run)
    assert parse_filter('or(has(tags, "x"), eq(run_type, "chain"))')(run)
    with pytest.raises(FilterError):
        parse_filter("gt(latency")
    with pytest.raises(FilterError):
        parse_filter("explode(latency, 5)")


def test_the_app_alembic_project_has_one_head_above_the_baseline() -> None:
    from alembic.script import ScriptDirectory

    from sandbox import app_migrations

    script = ScriptDirectory.from_config(app_migrations.config("postgresql://u@db:5432/x"))
    assert script.get_heads() == [app_migrations.HEAD]
    line = [r.revision for r in script.walk_revisions("base", app_migrations.HEAD)]
    assert line == [app_migrations.HEAD, app_migrations.BASELINE]
    assert app_migrations.sqlalchemy_url("postgresql://u@db/x") == "postgresql+psycopg://u@db/x"
