"""The sandbox ships the app's Alembic project and a staging database next to production, so
`db-migrate` / `db-downgrade` run for real: both databases hold the app's schema stamped at the
baseline migration, the environment names the staging database and the script directory, and an
`a1e…` deploy names the newest migration in its Railway meta."""

from __future__ import annotations

import psycopg
import pytest

from sandbox.app_migrations import BASELINE, HEAD, PATH
from sandbox.handle import SandboxHandle
from tasks import railway
from tests.sandbox.conftest import Blocks, eventually

pytestmark = pytest.mark.integration
TABLES = {"stores", "store_api_keys", "access_log", "conversations", "messages"}


def schema_and_version(url: str) -> tuple[set[str], list[str], str]:
    with psycopg.connect(url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        version = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        name = conn.execute("SELECT current_database()").fetchone()
    return tables, version, str(name[0] if name else "")


def test_the_sandbox_has_a_staging_database_beside_production_both_at_the_baseline(
    sandbox: SandboxHandle,
) -> None:
    prod = schema_and_version(sandbox.env["RUNBOOK_APP_DATABASE_URL"])
    staging = schema_and_version(sandbox.env["RUNBOOK_APP_STAGING_DATABASE_URL"])
    assert staging[2] == f"{prod[2]}_staging", "a database of its own"
    for tables, version, _ in (prod, staging):
        assert tables >= TABLES
        assert version == [BASELINE]
    assert sandbox.env["RUNBOOK_APP_MIGRATIONS_PATH"] == str(PATH)
    assert (PATH / "env.py").is_file()


async def test_a_deploy_of_an_a1e_commit_names_the_newest_migration_in_its_meta(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    applied = await railway.deploy_commit.fn(blocks.railway, "a1e0c0de5")
    plain = await railway.deploy_commit.fn(blocks.railway, "c0de0a1e5")
    needs = await railway.get_deployment.fn(blocks.railway, str(applied.new_deployment_id))
    other = await eventually(
        lambda: railway.get_deployment.fn(blocks.railway, str(plain.new_deployment_id)),
        lambda d: d.status == "SUCCESS",
    )
    assert needs.migration == HEAD
    assert other.migration is None and other.status == "SUCCESS"
