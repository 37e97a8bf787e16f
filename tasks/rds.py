"""AWS RDS, where the platform's Postgres may live (boto3 through `asyncio.to_thread`).

Read: `get_db_instance`. Acts: `modify_db_instance_class` (apply immediately),
`failover_db` (reboot with ForceFailover; needs Multi-AZ).

Acts are sent once: their client never retries (`Rds.get_client(mutation=True)`) and a lost
answer (5xx, read timeout) raises `OutcomeUnknown`; the caller reconciles by describing the
instance. Only a connection that never opened, or throttling, is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from prefect import task
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


@task(name="get-db-instance", retries=0)
async def get_db_instance(rds: Rds) -> DbInstance:
    """`aws rds describe-db-instances --db-instance-identifier …`."""
    answer = await _call(
        rds, lambda c: c.describe_db_instances(DBInstanceIdentifier=rds.instance_id)
    )
    return _instance(answer["DBInstances"][0])


@task(name="modify-db-instance-class", retries=0)
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


@task(name="failover-db", retries=0)
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
