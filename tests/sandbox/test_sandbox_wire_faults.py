"""Wire faults: a vendor API applies a request and then loses or spoils its answer, for the next
N requests only. What a client sees on the wire, and what the sandbox recorded."""

from __future__ import annotations

import time
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from sandbox.handle import SandboxError, SandboxHandle
from tasks import rds
from tests.sandbox.conftest import Blocks, eventually

pytestmark = pytest.mark.integration
READ = (
    "query($e: String!, $s: String!) {"
    " serviceInstance(environmentId: $e, serviceId: $s) { numReplicas } }"
)
SCALE = (
    "mutation($e: String!, $p: EnvironmentConfig) {"
    " environmentPatchCommit(environmentId: $e, patch: $p) }"
)


def post(sb: SandboxHandle, query: str, replicas: int = 3, timeout: float = 10) -> httpx.Response:
    env = sb.env
    patch = {
        "services": {
            env["RUNBOOK_RAILWAY_SERVICE_ID"]: {
                "deploy": {"multiRegionConfig": {"us-west2": {"numReplicas": replicas}}}
            }
        }
    }
    variables: dict[str, Any] = {"e": env["RUNBOOK_RAILWAY_ENVIRONMENT_ID"]}
    if query == READ:
        variables["s"] = env["RUNBOOK_RAILWAY_SERVICE_ID"]
    else:
        variables["p"] = patch
    return httpx.post(
        env["RUNBOOK_RAILWAY_ENDPOINT"],
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {env['RUNBOOK_RAILWAY_TOKEN']}"},
        timeout=timeout,
    )


def control(sb: SandboxHandle, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{sb.env['RUNBOOK_SANDBOX_CONTROL_URL']}/inject", json=body, timeout=10)


def test_wire_faults_are_validated_listed_and_cleared(sandbox: SandboxHandle) -> None:
    refused: list[dict[str, Any]] = [
        {"fault": "db-down", "count": 2},  # a platform fault takes no wire options
        {"fault": "railway-500", "count": 0},
        {"fault": "railway-500", "count": 1.5},
        {"fault": "railway-500", "on": "subscription"},
        {"fault": "railway-timeout-after-apply", "on": "query"},  # only a mutation is applied
        {"fault": "rds-timeout-after-apply", "hold_s": 10_000},
        {"fault": "railway-500", "target": "shopify"},
        {"fault": ["railway-500"]},
    ]
    for body in refused:
        answer = control(sandbox, body)
        assert answer.status_code == 422, body
        assert answer.json()["error"].count("\n") == 0
    assert sandbox.state()["wire_faults"] == [] and sandbox.state()["faults"] == []

    sandbox.inject("railway-500", count=2)
    sandbox.inject("rds-500-after-apply")
    armed = {w["name"]: w for w in sandbox.state()["wire_faults"]}
    assert armed["railway-500"] | {"expires_in": None} == {
        "name": "railway-500",
        "remaining": 2,
        "on": "any",
        "hold_s": 30.0,
        "expires_in": None,
    }
    assert sandbox.clear("railway-500")["cleared"] == ["railway-500"]
    assert [w["name"] for w in sandbox.state()["wire_faults"]] == ["rds-500-after-apply"]
    sandbox.reset()
    assert sandbox.state()["wire_faults"] == []
    with pytest.raises(SandboxError, match="unknown fault"):
        sandbox.inject("railway-meteor")


def test_railway_500_fires_for_the_next_n_requests_only(sandbox: SandboxHandle) -> None:
    sandbox.inject("railway-500", count=2)
    statuses = [post(sandbox, READ).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert sandbox.state()["wire_faults"] == []


def test_railway_wire_fault_scoped_to_mutations_leaves_reads_alone(
    sandbox: SandboxHandle,
) -> None:
    start = len(sandbox.journal())
    sandbox.inject("railway-transient-error", on="mutation")
    read = post(sandbox, READ)
    assert read.status_code == 200 and read.json()["data"]["serviceInstance"]["numReplicas"] == 2

    spoiled = post(sandbox, SCALE, replicas=4)
    assert spoiled.status_code == 200
    assert spoiled.json() == {
        "data": None,
        "errors": [
            {
                "message": "Problem processing request",
                "extensions": {"code": "INTERNAL_SERVER_ERROR"},
            }
        ],
    }
    assert sandbox.state()["replicas"] == 4, "applied, though the answer says otherwise"
    entries = sandbox.journal()[start:]
    assert [(e["operation"], e["fault"]) for e in entries] == [
        ("environmentPatchCommit", "railway-transient-error")
    ]


def test_railway_timeout_after_apply_holds_the_answer_past_the_client_timeout(
    sandbox: SandboxHandle,
) -> None:
    start = len(sandbox.journal())
    sandbox.inject("railway-timeout-after-apply", hold_s=20)
    assert post(sandbox, READ).status_code == 200  # reads are not held

    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post(sandbox, SCALE, replicas=5, timeout=0.5)
    assert time.monotonic() - began < 5
    assert sandbox.state()["replicas"] == 5
    assert [e["fault"] for e in sandbox.journal()[start:]] == ["railway-timeout-after-apply"]
    assert post(sandbox, SCALE, replicas=2).status_code == 200  # one shot: the next is answered
    assert "fault" not in sandbox.journal()[-1]


def test_wire_fault_with_seconds_expires_unfired(sandbox: SandboxHandle) -> None:
    sandbox.inject("railway-500", seconds=0.3)
    time.sleep(0.5)
    assert post(sandbox, READ).status_code == 200
    assert sandbox.state()["wire_faults"] == []


async def test_rds_500_after_apply_makes_default_boto3_send_it_again(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    """Why the mutation client must not retry: botocore's default retry re-sends the change."""
    env = sandbox.env
    await eventually(lambda: rds.get_db_instance.fn(blocks.rds), lambda i: i.status == "available")
    client = boto3.client(
        "rds",
        endpoint_url=env["RUNBOOK_AWS_ENDPOINT_URL"],
        region_name=env["RUNBOOK_AWS_REGION"],
        aws_access_key_id=env["RUNBOOK_AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["RUNBOOK_AWS_SECRET_ACCESS_KEY"],
    )
    instance_id = env["RUNBOOK_RDS_INSTANCE_ID"]
    same_class = client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][0][
        "DBInstanceClass"
    ]
    before = sandbox.state()["rds"]["requests"].get("ModifyDBInstance", 0)
    start = len(sandbox.journal())
    sandbox.inject("rds-500-after-apply")

    with pytest.raises(ClientError) as caught:  # the re-send meets the change it already made
        client.modify_db_instance(
            DBInstanceIdentifier=instance_id, DBInstanceClass=same_class, ApplyImmediately=True
        )

    assert caught.value.response["Error"]["Code"] == "InvalidDBInstanceState"
    assert sandbox.state()["rds"]["requests"]["ModifyDBInstance"] == before + 2
    applied = [e for e in sandbox.journal()[start:] if e["operation"] == "ModifyDBInstance"]
    assert [e["fault"] for e in applied] == ["rds-500-after-apply"]
    await eventually(lambda: rds.get_db_instance.fn(blocks.rds), lambda i: i.status == "available")
