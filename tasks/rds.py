"""AWS RDS, where the platform's Postgres may live (boto3 through `asyncio.to_thread`).

Read: `get_db_instance`, `get_orderable_instance_class` (is a class offered for the engine?),
`wait_for_db_instance` (a bounded waiter: polls until the instance is `available` with nothing
pending, with progress logs). Acts: `modify_db_instance_class` (apply immediately, or pending
until the maintenance window), `failover_db` (reboot with ForceFailover; needs Multi-AZ).

Acts are sent once: their client never retries (`Rds.get_client(mutation=True)`) and a lost
answer (5xx, read timeout) raises `OutcomeUnknown`; the caller reconciles by describing the
instance. Only a connection that never opened, or throttling, is retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict

from blocks.rds import Rds
from runbook.errors import (
    NotAuthorized,
    PermanentError,
    RateLimited,
    RunbookError,
    TransientError,
)
from tasks.http import retry_unless_sent, unknown

T = TypeVar("T")
SERVICE = "rds"
_THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_AUTH = {
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


class DbInstance(BaseModel):
    model_config = ConfigDict(frozen=True)

    instance_id: str
    status: str
    instance_class: str
    multi_az: bool
    availability_zone: str | None
    secondary_availability_zone: str | None
    pending_instance_class: str | None
    read_replicas: tuple[str, ...]
    endpoint: str | None


class OrderableClass(BaseModel):
    """Whether RDS offers `instance_class` for `engine` (`orderable` None: the API listed no
    class at all for the engine, so it cannot tell — e.g. an emulator that lacks the data)."""

    model_config = ConfigDict(frozen=True)

    instance_class: str
    engine: str
    orderable: bool | None


class DbWait(BaseModel):
    """How a bounded wait for the instance ended: the last reading, the statuses seen in order,
    and whether it ran out of time before the instance settled."""

    model_config = ConfigDict(frozen=True)

    instance: DbInstance
    seen: tuple[str, ...]
    waited_s: float
    timed_out: bool


class RdsChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str
    instance_id: str
    status: str
    detail: dict[str, str] = {}


def _map(exc: Exception, *, mutation: bool = False) -> RunbookError:
    """A botocore failure → our tree. For a mutation, anything after the request left (5xx,
    read timeout, connection dropped mid-answer) is `OutcomeUnknown`; a connection that never
    opened (EndpointConnectionError, ConnectTimeoutError) or throttling (AWS refused it before
    acting) stays retryable."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))[:200]
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _THROTTLED or status == 429:
            return RateLimited(f"{SERVICE}: {code}")
        if code in _AUTH:
            return NotAuthorized(f"{SERVICE}: {code}")
        if status >= 500:
            if mutation:
                return unknown(SERVICE, f"{code} (HTTP {status})")
            return TransientError(f"{SERVICE}: {code} (HTTP {status})")
        return PermanentError(f"{SERVICE}: {code}: {message}")
    if isinstance(exc, EndpointConnectionError):
        return TransientError(f"{SERVICE}: endpoint unreachable")
    if isinstance(exc, BotoConnectionError):  # connect timeout, proxy, TLS: nothing was sent
        return TransientError(f"{SERVICE}: could not connect ({type(exc).__name__})")
    if isinstance(exc, HTTPClientError) and mutation:  # read timeout, connection closed
        return unknown(SERVICE, f"no answer ({type(exc).__name__})")
    return TransientError(f"{SERVICE}: {type(exc).__name__}")


async def _call(rds: Rds, operation: Callable[[Any], T], *, mutation: bool = False) -> T:
    """One boto3 call in a thread. A read relies on botocore's standard-mode retries (its only
    retry layer); a mutation's client makes one attempt, and it is sent again here only when
    it never left or was throttled — never after `OutcomeUnknown`."""

    async def once() -> T:
        def run() -> T:
            return operation(rds.get_client(mutation=mutation))

        try:
            return await asyncio.to_thread(run)
        except (ClientError, BotoCoreError) as exc:
            raise _map(exc, mutation=mutation) from None

    if not mutation:
        return await once()
    return await retry_unless_sent(once, attempts=2)


def _instance(raw: dict[str, Any]) -> DbInstance:
    endpoint = raw.get("Endpoint") or {}
    return DbInstance(
        instance_id=raw["DBInstanceIdentifier"],
        status=raw["DBInstanceStatus"],
        instance_class=raw["DBInstanceClass"],
        multi_az=bool(raw.get("MultiAZ")),
        availability_zone=raw.get("AvailabilityZone"),
        secondary_availability_zone=raw.get("SecondaryAvailabilityZone"),
        pending_instance_class=(raw.get("PendingModifiedValues") or {}).get("DBInstanceClass"),
        read_replicas=tuple(raw.get("ReadReplicaDBInstanceIdentifiers") or ()),
        endpoint=f"{endpoint['Address']}:{endpoint.get('Port')}"
        if endpoint.get("Address")
        else None,
    )


@task(name="get-db-instance", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_db_instance(rds: Rds) -> DbInstance:
    """`aws rds describe-db-instances --db-instance-identifier …`."""
    answer = await _call(
        rds, lambda c: c.describe_db_instances(DBInstanceIdentifier=rds.instance_id)
    )
    return _instance(answer["DBInstances"][0])


@task(name="get-orderable-instance-class", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_orderable_instance_class(
    rds: Rds, instance_class: str, engine: str = "postgres"
) -> OrderableClass:
    """`aws rds describe-orderable-db-instance-options --engine postgres --db-instance-class …`:
    is this class offered for the engine? An empty answer is asked once more without the class,
    to tell "not offered" from "this endpoint lists nothing for the engine"."""

    def ask(**only: str) -> Any:
        return lambda c: c.describe_orderable_db_instance_options(
            Engine=engine, MaxRecords=20, **only
        )

    found = await _call(rds, ask(DBInstanceClass=instance_class))
    if found.get("OrderableDBInstanceOptions"):
        return OrderableClass(instance_class=instance_class, engine=engine, orderable=True)
    anything = await _call(rds, ask())
    known = bool(anything.get("OrderableDBInstanceOptions"))
    return OrderableClass(
        instance_class=instance_class, engine=engine, orderable=False if known else None
    )


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a run (`.fn` in a test, a script)
        return logging.getLogger("runbook.rds")


def settled(instance: DbInstance) -> bool:
    """`available` with nothing pending: a change applied immediately is complete."""
    return instance.status == "available" and instance.pending_instance_class is None


@task(name="wait-for-db-instance", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def wait_for_db_instance(
    rds: Rds, timeout_s: float, poll_s: float = 10.0, log_every_s: float = 60.0
) -> DbWait:
    """Poll `get_db_instance` until the instance is `available` with nothing pending (e.g.
    `modifying` → `available` after a class change), at most `timeout_s`. Logs every status
    change, and the status at least every `log_every_s`. A read that fails transiently is
    logged and polled again; running out of time is an answer (`timed_out`), not an error."""
    log = _logger()
    started = time.monotonic()
    deadline = started + max(0.0, timeout_s)
    seen: list[str] = []
    last_log = started
    instance: DbInstance | None = None
    while True:
        try:
            instance = await get_db_instance.fn(rds)
        except TransientError as exc:
            log.warning("RDS %s not readable (%s); polling again", rds.instance_id, exc)
        now = time.monotonic()
        if instance is not None:
            changed = not seen or seen[-1] != instance.status
            if changed:
                seen.append(instance.status)
            if changed or now - last_log >= log_every_s:
                last_log = now
                log.info(
                    "RDS %s is %s (class %s%s) after %.0f s of at most %.0f s",
                    rds.instance_id,
                    instance.status,
                    instance.instance_class,
                    f", pending {instance.pending_instance_class}"
                    if instance.pending_instance_class
                    else "",
                    now - started,
                    timeout_s,
                )
            if settled(instance):
                return DbWait(
                    instance=instance,
                    seen=tuple(seen),
                    waited_s=round(now - started, 1),
                    timed_out=False,
                )
        remaining = deadline - now
        if remaining <= 0:
            break
        await asyncio.sleep(min(poll_s, remaining))
    if instance is None:  # never readable: the last read's error says why
        instance = await get_db_instance.fn(rds)
        seen.append(instance.status)
    waited = round(time.monotonic() - started, 1)
    log.warning(
        "RDS %s still %s after %.0f s: stopped waiting", rds.instance_id, instance.status, waited
    )
    return DbWait(instance=instance, seen=tuple(seen), waited_s=waited, timed_out=True)


@task(name="modify-db-instance-class", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def modify_db_instance_class(
    rds: Rds, instance_class: str, apply_immediately: bool = True
) -> RdsChange:
    """`aws rds modify-db-instance --db-instance-class … [--apply-immediately]` (without it the
    change waits, pending, for the next maintenance window)."""
    answer = await _call(
        rds,
        lambda c: c.modify_db_instance(
            DBInstanceIdentifier=rds.instance_id,
            DBInstanceClass=instance_class,
            ApplyImmediately=apply_immediately,
        ),
        mutation=True,
    )
    raw = answer["DBInstance"]
    return RdsChange(
        action="modify_db_instance_class",
        instance_id=rds.instance_id,
        status=raw["DBInstanceStatus"],
        detail={"instance_class": instance_class},
    )


@task(name="failover-db", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def failover_db(rds: Rds) -> RdsChange:
    """Fail over to the Multi-AZ standby (`reboot-db-instance --force-failover`)."""
    answer = await _call(
        rds,
        lambda c: c.reboot_db_instance(DBInstanceIdentifier=rds.instance_id, ForceFailover=True),
        mutation=True,
    )
    raw = answer["DBInstance"]
    return RdsChange(
        action="failover_db", instance_id=rds.instance_id, status=raw["DBInstanceStatus"]
    )
