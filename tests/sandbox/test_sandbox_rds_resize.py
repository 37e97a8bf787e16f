"""The RDS fake where a resize depends on it: the class during and after `modifying`, a change
deferred to the maintenance window, the orderable classes for PostgreSQL, the bounded waiter."""

from __future__ import annotations

import time

import boto3
import pytest

from sandbox.handle import SandboxHandle
from sandbox.rds import INSTANCE_CLASS, ORDERABLE_CLASSES
from tasks import rds
from tests.sandbox.conftest import Blocks, eventually

pytestmark = pytest.mark.integration


def client(sandbox: SandboxHandle) -> object:
    env = sandbox.env
    return boto3.client(
        "rds",
        endpoint_url=env["RUNBOOK_AWS_ENDPOINT_URL"],
        region_name=env["RUNBOOK_AWS_REGION"],
        aws_access_key_id=env["RUNBOOK_AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["RUNBOOK_AWS_SECRET_ACCESS_KEY"],
    )


async def settled(blocks: Blocks) -> None:
    await eventually(
        lambda: rds.get_db_instance.fn(blocks.rds),
        lambda i: i.status == "available",
        timeout=15,
    )


async def test_modifying_keeps_the_old_class_until_available(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    await settled(blocks)
    assert (await rds.get_db_instance.fn(blocks.rds)).instance_class == INSTANCE_CLASS
    await rds.modify_db_instance_class.fn(blocks.rds, "db.t3.large", True)
    during = await rds.get_db_instance.fn(blocks.rds)
    assert (during.status, during.instance_class, during.pending_instance_class) == (
        "modifying",
        INSTANCE_CLASS,
        "db.t3.large",
    )
    after = await eventually(
        lambda: rds.get_db_instance.fn(blocks.rds), lambda i: i.status == "available"
    )
    assert (after.instance_class, after.pending_instance_class) == ("db.t3.large", None)
    sandbox.reset()
    assert (await rds.get_db_instance.fn(blocks.rds)).instance_class == INSTANCE_CLASS


async def test_without_apply_immediately_the_class_is_pending_and_unchanged(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    await settled(blocks)
    change = await rds.modify_db_instance_class.fn(blocks.rds, "db.m5.large", False)
    assert change.status == "available"
    deferred = await rds.get_db_instance.fn(blocks.rds)
    assert (deferred.status, deferred.instance_class) == ("available", INSTANCE_CLASS)
    assert deferred.pending_instance_class == "db.m5.large"
    applied = [e for e in sandbox.journal() if e["operation"] == "ModifyDBInstance"][-1]
    assert applied["args"]["ApplyImmediately"] == "false"
    # asking for the current class again cancels the pending change
    await rds.modify_db_instance_class.fn(blocks.rds, INSTANCE_CLASS, False)
    assert (await rds.get_db_instance.fn(blocks.rds)).pending_instance_class is None


async def test_orderable_classes_for_postgres_with_paging(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    boto = client(sandbox)
    pages = boto.get_paginator("describe_orderable_db_instance_options").paginate(  # type: ignore[attr-defined]
        Engine="postgres", PaginationConfig={"PageSize": 20}
    )
    listed = [o["DBInstanceClass"] for p in pages for o in p["OrderableDBInstanceOptions"]]
    assert listed == list(ORDERABLE_CLASSES) and len(listed) > 20
    assert (await rds.get_orderable_instance_class.fn(blocks.rds, "db.t3.large")).orderable
    unknown = await rds.get_orderable_instance_class.fn(blocks.rds, "db.x9.huge")
    assert unknown.orderable is False
    # an engine the endpoint lists nothing for cannot tell (the flow falls back to prices)
    mystery = await rds.get_orderable_instance_class.fn(blocks.rds, "db.t3.large", "db2-se")
    assert mystery.orderable is None


async def test_waiter_follows_modifying_to_available_and_is_bounded(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    await settled(blocks)
    await rds.modify_db_instance_class.fn(blocks.rds, "db.t3.large", True)
    started = time.monotonic()
    short = await rds.wait_for_db_instance.fn(blocks.rds, 0.5, 0.2)
    assert short.timed_out and short.instance.status == "modifying"
    assert time.monotonic() - started < 2.5, "the waiter is bounded by its timeout"
    done = await rds.wait_for_db_instance.fn(blocks.rds, 20, 0.25)
    assert not done.timed_out
    assert done.seen == ("modifying", "available")
    assert done.instance.instance_class == "db.t3.large"
    assert done.instance.pending_instance_class is None
