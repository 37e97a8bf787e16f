"""A mutation is sent once: against the sandbox over HTTP, a Railway or RDS change whose answer
is lost after it was applied raises `OutcomeUnknown` and reaches the platform exactly once;
reads are still retried; a connection that never opened stays a plain `TransientError`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from blocks import Railway, Rds
from runbook.errors import OutcomeUnknown, PermanentError, TransientError
from sandbox.environment import SECRETS
from sandbox.handle import SandboxHandle
from tasks import railway, rds
from tests.sandbox.conftest import eventually
from tests.tasks.netfakes import closed_port

pytestmark = pytest.mark.integration
Act = Callable[[Railway, dict[str, str]], Awaitable[Any]]

# One per Railway act: the journal operation it makes, and how to call it.
ACTS: dict[str, Act] = {
    "deploymentRollback": lambda rw, ids: railway.rollback_deployment.fn(rw, ids["good"]),
    "deploymentRedeploy": lambda rw, ids: railway.redeploy_service.fn(rw, ids["current"]),
    "deploymentRestart": lambda rw, ids: railway.restart_deployment.fn(rw, ids["current"]),
    "serviceInstanceDeployV2": lambda rw, _: railway.deploy_commit.fn(rw, "0123abcd"),
    "variableCollectionUpsert": lambda rw, _: railway.set_variables.fn(
        rw, {"REQUEST_QUEUE_ENABLED": "true"}, skip_deploys=True
    ),
    "environmentPatchCommit": lambda rw, _: railway.scale_replicas.fn(rw, 3),
    "serviceInstanceLimitsUpdate": lambda rw, _: railway.set_service_limits.fn(rw, 2.0, 4.0),
}


@pytest.fixture
async def rw(platform_env: SandboxHandle) -> Railway:
    return await Railway.resolve()


@pytest.fixture
async def aws(platform_env: SandboxHandle) -> Rds:
    block = await Rds.resolve()
    await eventually(  # a failover or resize by an earlier test must have finished
        lambda: rds.get_db_instance.fn(block), lambda i: i.status == "available", timeout=15
    )
    return block


async def deployment_ids(rw: Railway) -> dict[str, str]:
    listing = await railway.get_deployments.fn(rw)
    assert listing.current_id is not None
    good = railway.last_known_good(listing.items, listing.current_id)
    assert good is not None
    return {"current": listing.current_id, "good": good.id}


def journal_since(sb: SandboxHandle, start: int) -> list[dict[str, Any]]:
    return sb.journal()[start:]


def assert_public(error: BaseException) -> None:
    text = str(error)
    assert "127.0.0.1" not in text and "://" not in text
    assert all(secret not in text for secret in SECRETS.values())


# -- Railway --------------------------------------------------------------------------------------
@pytest.mark.parametrize("operation", list(ACTS))
async def test_railway_mutation_timed_out_after_apply_is_outcome_unknown_and_sent_once(
    platform_env: SandboxHandle, rw: Railway, operation: str
) -> None:
    sb = platform_env
    ids = await deployment_ids(rw)
    impatient = rw.model_copy(update={"timeout_s": 1.0})
    start = len(sb.journal())
    sb.inject("railway-timeout-after-apply", hold_s=20)

    with pytest.raises(OutcomeUnknown) as caught:
        await ACTS[operation](impatient, ids)

    sent = journal_since(sb, start)
    assert [e["operation"] for e in sent] == [operation], "applied once, never re-sent"
    assert sent[0]["fault"] == "railway-timeout-after-apply"
    assert_public(caught.value)
    assert sb.state()["wire_faults"] == []


async def test_railway_outcome_unknown_is_reconciled_by_reading_the_platform(
    platform_env: SandboxHandle, rw: Railway
) -> None:
    sb = platform_env
    sb.inject("railway-timeout-after-apply", hold_s=20)
    impatient = rw.model_copy(update={"timeout_s": 1.0})
    with pytest.raises(OutcomeUnknown):
        await railway.set_variables.fn(impatient, {"DEFAULT_MODEL": "gpt-4o-mini"})
    seen = await railway.get_variable.fn(rw, "DEFAULT_MODEL")
    assert seen.value == "gpt-4o-mini", "the lost answer hid a change that did happen"


@pytest.mark.parametrize("fault", ["railway-transient-error", "railway-500"])
async def test_railway_read_with_transient_failure_is_retried_and_succeeds(
    platform_env: SandboxHandle, rw: Railway, fault: str
) -> None:
    sb = platform_env
    sb.inject(fault, count=1)
    instance = await railway.get_service_instance.fn(rw)
    assert instance.num_replicas == 2 and instance.latest_deployment_id
    assert sb.state()["wire_faults"] == [], "the first answer was the fault; the retry succeeded"


async def test_railway_read_with_transient_failure_twice_gives_up_as_transient(
    platform_env: SandboxHandle, rw: Railway
) -> None:
    platform_env.inject("railway-transient-error", count=2)
    with pytest.raises(TransientError) as caught:
        await railway.get_deployments.fn(rw)
    assert not isinstance(caught.value, OutcomeUnknown)
    assert "Problem processing request" in str(caught.value)


@pytest.mark.parametrize("fault", ["railway-transient-error", "railway-500"])
async def test_railway_mutation_with_transient_error_is_outcome_unknown_and_sent_once(
    platform_env: SandboxHandle, rw: Railway, fault: str
) -> None:
    sb = platform_env
    start = len(sb.journal())
    sb.inject(fault, count=2, on="mutation")  # a retry would be applied and fail again

    with pytest.raises(OutcomeUnknown) as caught:
        await railway.scale_replicas.fn(rw, 4)  # a read (region), then the mutation

    sent = journal_since(sb, start)
    assert [e["operation"] for e in sent] == ["environmentPatchCommit"]
    assert sent[0]["fault"] == fault
    assert [w["remaining"] for w in sb.state()["wire_faults"]] == [1], "fired exactly once"
    assert_public(caught.value)


async def test_railway_permanent_graphql_error_on_mutation_stays_permanent(
    platform_env: SandboxHandle, rw: Railway
) -> None:
    listing = await railway.get_deployments.fn(rw, first=500)  # older tests add deployments
    failed = next(d for d in listing.items if d.status == "FAILED")
    with pytest.raises(PermanentError, match="cannot be rolled back"):
        await railway.rollback_deployment.fn(rw, failed.id)


async def test_railway_mutation_that_cannot_connect_is_transient_not_outcome_unknown(
    platform_env: SandboxHandle, rw: Railway
) -> None:
    sb = platform_env
    start = len(sb.journal())
    unreachable = rw.model_copy(update={"endpoint": f"http://127.0.0.1:{closed_port()}/graphql/v2"})
    with pytest.raises(TransientError, match="connection failed") as caught:
        await railway.set_variables.fn(unreachable, {"REQUEST_QUEUE_ENABLED": "true"})
    assert not isinstance(caught.value, OutcomeUnknown), "nothing was sent: safe to retry"
    assert_public(caught.value)
    assert journal_since(sb, start) == []


# -- RDS ------------------------------------------------------------------------------------------
def rds_requests(sb: SandboxHandle, action: str) -> int:
    received: dict[str, int] = sb.state()["rds"]["requests"]
    return received.get(action, 0)


async def test_rds_failover_answered_500_after_apply_is_outcome_unknown_and_sent_once(
    platform_env: SandboxHandle, aws: Rds
) -> None:
    sb = platform_env
    start, received = len(sb.journal()), rds_requests(sb, "RebootDBInstance")
    sb.inject("rds-500-after-apply")

    with pytest.raises(OutcomeUnknown) as caught:
        await rds.failover_db.fn(aws)

    assert rds_requests(sb, "RebootDBInstance") == received + 1, "botocore did not re-send it"
    reboots = [e for e in journal_since(sb, start) if e["operation"] == "RebootDBInstance"]
    assert len(reboots) == 1 and reboots[0]["fault"] == "rds-500-after-apply"
    assert reboots[0]["args"]["ForceFailover"] is True
    assert_public(caught.value)
    assert (await rds.get_db_instance.fn(aws)).status == "rebooting", "it did happen"
    await eventually(lambda: rds.get_db_instance.fn(aws), lambda i: i.status == "available")


async def test_rds_modify_timed_out_after_apply_is_outcome_unknown_and_sent_once(
    platform_env: SandboxHandle, aws: Rds
) -> None:
    sb = platform_env
    same_class = (await rds.get_db_instance.fn(aws)).instance_class  # later tests expect it
    received = rds_requests(sb, "ModifyDBInstance")
    sb.inject("rds-timeout-after-apply", hold_s=20)
    impatient = aws.model_copy(update={"read_timeout_s": 1.0})

    with pytest.raises(OutcomeUnknown) as caught:
        await rds.modify_db_instance_class.fn(impatient, same_class)

    assert rds_requests(sb, "ModifyDBInstance") == received + 1
    assert_public(caught.value)
    await eventually(lambda: rds.get_db_instance.fn(aws), lambda i: i.status == "available")


async def test_rds_mutation_that_cannot_connect_is_transient_not_outcome_unknown(
    platform_env: SandboxHandle, aws: Rds
) -> None:
    sb = platform_env
    received = rds_requests(sb, "RebootDBInstance")
    unreachable = aws.model_copy(update={"endpoint_url": f"http://127.0.0.1:{closed_port()}"})
    with pytest.raises(TransientError, match="endpoint unreachable") as caught:
        await rds.failover_db.fn(unreachable)
    assert not isinstance(caught.value, OutcomeUnknown)
    assert rds_requests(sb, "RebootDBInstance") == received


def test_rds_mutation_client_makes_one_attempt_with_explicit_timeouts() -> None:
    block = Rds(endpoint_url="http://127.0.0.1:9")
    mutating = block.get_client(mutation=True).meta.config
    assert mutating.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (mutating.connect_timeout, mutating.read_timeout) == (5.0, 30.0)
    reading = block.get_client().meta.config
    assert reading.retries == {"total_max_attempts": 3, "mode": "standard"}
    assert (reading.connect_timeout, reading.read_timeout) == (5.0, 30.0)
