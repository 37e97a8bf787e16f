"""The fakes behave like the real services where our clients depend on it: auth, errors,
rate limits, state transitions, and the records tests use to see what humans were told."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest
from pydantic import SecretStr

from blocks import Railway
from runbook.errors import NotAuthorized, PermanentError, RateLimited, TransientError
from sandbox.environment import SECRETS
from sandbox.handle import SandboxError, SandboxHandle
from tasks import langsmith, llm, notify, railway, rds, status_pages
from tests.sandbox.conftest import Blocks, eventually

pytestmark = pytest.mark.integration


def graphql(sandbox: SandboxHandle, query: str, **headers: str) -> httpx.Response:
    return httpx.post(
        sandbox.env["RUNBOOK_RAILWAY_ENDPOINT"], json={"query": query}, headers=headers, timeout=10
    )


# -- Railway --------------------------------------------------------------------------------------
async def test_railway_unauthenticated_gets_not_authorized(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    raw = graphql(sandbox, '{ deployment(id: "x") { id } }')
    assert raw.json()["errors"][0]["message"] == "Not Authorized"
    stranger = blocks.railway.model_copy(update={"token": SecretStr("rw-not-the-token")})
    with pytest.raises(NotAuthorized) as caught:
        await railway.get_deployments.fn(stranger)
    assert "rw-not-the-token" not in str(caught.value)
    project = Railway(
        **{**blocks.railway.model_dump(), "token_kind": "project", "token": blocks.railway.token}
    )
    assert (await railway.get_deployments.fn(project)).items  # Project-Access-Token works


async def test_railway_rollback_without_can_rollback_is_an_error(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    listing = await railway.get_deployments.fn(blocks.railway)
    failed = next(d for d in listing.items if d.status == "FAILED")
    assert not failed.can_rollback
    before = len(sandbox.journal())
    with pytest.raises(PermanentError, match="cannot be rolled back"):
        await railway.rollback_deployment.fn(blocks.railway, failed.id)
    assert len(sandbox.journal()) == before  # a refused mutation changes nothing


async def test_railway_rate_limit_is_429_with_retry_after(sandbox: SandboxHandle) -> None:
    headers = {"Authorization": f"Bearer {sandbox.env['RUNBOOK_RAILWAY_TOKEN']}"}
    body = {
        "query": "query($e: String!, $s: String!) { serviceInstance(environmentId: $e,"
        " serviceId: $s) { numReplicas } }",
        "variables": {
            "e": sandbox.env["RUNBOOK_RAILWAY_ENVIRONMENT_ID"],
            "s": sandbox.env["RUNBOOK_RAILWAY_SERVICE_ID"],
        },
    }
    async with httpx.AsyncClient(headers=headers) as client:
        answers = await asyncio.gather(
            *(client.post(sandbox.env["RUNBOOK_RAILWAY_ENDPOINT"], json=body) for _ in range(120))
        )
    limited = [a for a in answers if a.status_code == 429]
    assert limited, "more than 40 requests in a second must be limited"
    assert limited[0].headers["Retry-After"] == "1"
    assert limited[0].headers["X-RateLimit-Remaining"] == "0"
    assert any(a.status_code == 200 for a in answers)
    await asyncio.sleep(1.1)  # let the window pass before the next test talks to Railway


async def test_railway_unknown_field_is_graphql_error(sandbox: SandboxHandle) -> None:
    token = sandbox.env["RUNBOOK_RAILWAY_TOKEN"]
    answer = graphql(
        sandbox, '{ deployment(id: "x") { id sparkles } }', Authorization=f"Bearer {token}"
    )
    assert answer.status_code == 200
    assert "Cannot query field 'sparkles'" in answer.json()["errors"][0]["message"]
    malformed = httpx.post(
        sandbox.env["RUNBOOK_RAILWAY_ENDPOINT"],
        content=b"{nope",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert malformed.status_code == 400


async def test_railway_scale_and_variables_change_state_and_journal(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    await railway.scale_replicas.fn(blocks.railway, 4)
    await railway.set_variables.fn(
        blocks.railway, {"OPENAI_API_KEY": "sk-rotated-9f8e7d6c5b4a"}, skip_deploys=True
    )
    state = sandbox.state()
    assert state["replicas"] == 4
    entries = sandbox.journal()[-2:]
    assert [e["operation"] for e in entries] == [
        "environmentPatchCommit",
        "variableCollectionUpsert",
    ]
    assert entries[1]["args"]["variables"] == {"OPENAI_API_KEY": "***"}
    for entry in entries:
        assert datetime.fromisoformat(entry["ts"]) > datetime.now(UTC) - timedelta(minutes=1)
    secret = await railway.get_variable.fn(blocks.railway, "OPENAI_API_KEY")
    assert secret.present and secret.value is None


async def test_maintenance_mode_variable_closes_chat_but_not_health(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    await railway.set_variables.fn(blocks.railway, {"MAINTENANCE_MODE": "true"})
    async with httpx.AsyncClient(base_url=blocks.api.base_url) as client:
        chat = await client.post("/v1/chat", json={})
        health = await client.get("/health")
    assert chat.status_code == 503 and "maintenance" in chat.json()["error"]
    assert health.json() == {"status": "ok", "maintenance": True}
    await railway.set_variables.fn(blocks.railway, {"MAINTENANCE_MODE": "false"})
    async with httpx.AsyncClient(base_url=blocks.api.base_url) as client:
        assert (await client.post("/v1/chat", json={"intent": "other"})).status_code == 200


# -- RDS ------------------------------------------------------------------------------------------
async def test_boto3_sees_modifying_then_available(sandbox: SandboxHandle, blocks: Blocks) -> None:
    env = sandbox.env
    client = boto3.client(
        "rds",
        endpoint_url=env["RUNBOOK_AWS_ENDPOINT_URL"],
        region_name=env["RUNBOOK_AWS_REGION"],
        aws_access_key_id=env["RUNBOOK_AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["RUNBOOK_AWS_SECRET_ACCESS_KEY"],
    )

    def status() -> dict[str, object]:
        found = client.describe_db_instances(DBInstanceIdentifier=env["RUNBOOK_RDS_INSTANCE_ID"])
        return found["DBInstances"][0]

    assert status()["DBInstanceStatus"] == "available"
    change = await rds.modify_db_instance_class.fn(blocks.rds, "db.t3.large")
    assert change.status == "modifying"
    during = status()
    assert during["DBInstanceStatus"] == "modifying"
    assert during["PendingModifiedValues"] == {"DBInstanceClass": "db.t3.large"}
    after = await eventually(
        lambda: rds.get_db_instance.fn(blocks.rds), lambda i: i.status == "available"
    )
    assert after.status == "available" and after.instance_class == "db.t3.large"
    assert sandbox.journal()[-1]["operation"] == "ModifyDBInstance"
    with pytest.raises(Exception, match="DBInstanceNotFound"):
        client.describe_db_instances(DBInstanceIdentifier="no-such-db")


# -- control endpoint -----------------------------------------------------------------------------
def test_control_rejects_unknown_fault_and_malformed_json(sandbox: SandboxHandle) -> None:
    control = sandbox.env["RUNBOOK_SANDBOX_CONTROL_URL"]
    unknown = httpx.post(f"{control}/inject", json={"fault": "meteor-strike"})
    assert unknown.status_code == 422 and "unknown fault 'meteor-strike'" in unknown.json()["error"]
    malformed = httpx.post(f"{control}/inject", content=b"{fault:")
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    wrong_target = httpx.post(f"{control}/inject", json={"fault": "db-down", "target": "shopify"})
    assert wrong_target.status_code == 422
    with pytest.raises(SandboxError, match="unknown fault"):
        sandbox.inject("meteor-strike")
    assert sandbox.state()["faults"] == []


def test_fault_with_duration_expires_by_itself(sandbox: SandboxHandle) -> None:
    sandbox.inject("integration-outage", seconds=0.5)
    assert [f["name"] for f in sandbox.state()["faults"]] == ["integration-outage"]
    deadline = time.monotonic() + 5  # expiry is checked every 0.5 s by a busy process
    while sandbox.state()["faults"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox.state()["faults"] == []


# -- sinks ----------------------------------------------------------------------------------------
async def test_sinks_record_what_humans_were_told(sandbox: SandboxHandle, blocks: Blocks) -> None:
    slack = await notify.send_slack.fn(blocks.slack, "Rolled back api to dep-0002 (error rate 14%)")
    page = await notify.send_pagerduty_event.fn(
        blocks.pagerduty, "High error rate on api", dedup_key="incident-42", severity="critical"
    )
    assert slack.accepted and page.accepted and page.dedup_key == "incident-42"
    assert sandbox.sink("slack")[-1]["text"] == "Rolled back api to dep-0002 (error rate 14%)"
    event = sandbox.sink("pagerduty")[-1]
    assert event["event_action"] == "trigger" and event["payload"]["summary"] == (
        "High error rate on api"
    )
    recorded = json.dumps([sandbox.sink("slack"), sandbox.sink("pagerduty"), sandbox.journal()])
    for secret in SECRETS.values():
        assert secret not in recorded


async def test_pagerduty_invalid_event_is_permanent_error(blocks: Blocks) -> None:
    wrong = blocks.pagerduty.model_copy(update={"routing_key": SecretStr("not-a-routing-key")})
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        await notify.send_pagerduty_event.fn(wrong, "x", dedup_key="d")
    assert "not-a-routing-key" not in str(caught.value)
    wrong_hook = blocks.slack.model_copy(
        update={"webhook_url": SecretStr(blocks.slack.webhook_url.get_secret_value() + "x")}
    )
    with pytest.raises(PermanentError) as caught_slack:
        await notify.send_slack.fn(wrong_hook, "hello")
    assert "sbxhook" not in str(caught_slack.value)


# -- client error mapping against the real fakes --------------------------------------------------
def test_env_names_are_the_settings_names(sandbox: SandboxHandle) -> None:
    from runbook.settings import Settings

    fields = {f"RUNBOOK_{name.upper()}" for name in Settings.model_fields}
    assert set(sandbox.env) - fields == {"RUNBOOK_SANDBOX_CONTROL_URL"}


async def test_railway_429_reaches_tasks_as_rate_limited_with_retry_after(
    blocks: Blocks,
) -> None:
    results = await asyncio.gather(
        *(railway.get_service_instance.fn(blocks.railway) for _ in range(90)),
        return_exceptions=True,
    )
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert limited and limited[0].retry_after == 1.0
    assert all(isinstance(r, railway.ServiceInstance | RateLimited) for r in results)
    await asyncio.sleep(1.1)


async def test_refused_keys_are_not_authorized_and_unreachable_is_transient(
    blocks: Blocks,
) -> None:
    with pytest.raises(NotAuthorized):
        await langsmith.get_trace_errors.fn(
            blocks.langsmith.model_copy(update={"api_key": SecretStr("lsv2-wrong")})
        )
    with pytest.raises(NotAuthorized):
        await llm.get_model_health.fn(
            blocks.llm.model_copy(update={"api_key": SecretStr("sk-wrong")})
        )
    closed = blocks.pages.model_copy(update={"pages": {"shopify": "http://127.0.0.1:9"}})
    with pytest.raises(TransientError, match="connection failed"):
        await status_pages.get_status_page.fn(closed, "shopify")


def test_customer_status_page_records_what_customers_were_told(sandbox: SandboxHandle) -> None:
    extra = sandbox.extra_env
    base = f"{extra['RUNBOOK_STATUSPAGE_URL']}/pages/{extra['RUNBOOK_STATUSPAGE_PAGE_ID']}"
    auth = {"Authorization": f"OAuth {extra['RUNBOOK_STATUSPAGE_API_KEY']}"}
    assert httpx.post(f"{base}/incidents", json={"incident": {}}).status_code == 401
    time.sleep(1.05)
    created = httpx.post(
        f"{base}/incidents",
        headers=auth,
        json={
            "incident": {
                "name": "Support chat unavailable",
                "status": "investigating",
                "components": {"chat": "major_outage"},
            }
        },
    )
    assert created.status_code == 201
    too_soon = httpx.get(f"{base}/incidents", headers=auth)
    assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "1"
    time.sleep(1.05)
    resolved = httpx.patch(
        f"{base}/incidents/{created.json()['id']}",
        headers=auth,
        json={"incident": {"status": "resolved", "components": {"chat": "operational"}}},
    )
    assert resolved.status_code == 200
    told = sandbox.sink("statuspage")
    assert [(m["action"], m["status"]) for m in told[-2:]] == [
        ("create", "investigating"),
        ("update", "resolved"),
    ]
    assert told[-1]["components"] == {"chat": "operational"}


async def test_openai_key_rotation_order_matters(sandbox: SandboxHandle, blocks: Blocks) -> None:
    extra = sandbox.extra_env
    org = f"{extra['RUNBOOK_OPENAI_ADMIN_URL']}/organization/projects/"
    org += extra["RUNBOOK_OPENAI_PROJECT_ID"]
    admin = httpx.Client(headers={"Authorization": f"Bearer {extra['RUNBOOK_OPENAI_ADMIN_KEY']}"})
    api = httpx.Client(base_url=blocks.api.base_url, timeout=10)
    with admin, api:
        account = admin.post(f"{org}/service_accounts", json={"name": "support-api-2"}).json()
        new_key = account["api_key"]["value"]
        probe = blocks.llm.model_copy(update={"api_key": SecretStr(new_key)})
        assert (await llm.get_model_health.fn(probe)).ok

        old = next(
            k for k in admin.get(f"{org}/api_keys").json()["data"] if k["owner"]["type"] == "user"
        )
        assert admin.delete(f"{org}/api_keys/{old['id']}").json()["deleted"]
        broken = api.post("/v1/chat", json={"intent": "other"})
        assert broken.status_code == 502 and "invalid_api_key" in broken.json()["error"]

        await railway.set_variables.fn(blocks.railway, {"OPENAI_API_KEY": new_key})
        assert api.post("/v1/chat", json={"intent": "other"}).status_code == 200
        svc_key = account["api_key"]["id"]
        assert admin.delete(f"{org}/api_keys/{svc_key}").status_code == 400
    assert new_key not in json.dumps(sandbox.journal())


async def test_http_logs_and_langsmith_v2_query_follow_the_traffic(
    sandbox: SandboxHandle, blocks: Blocks
) -> None:
    live = await railway.get_service_instance.fn(blocks.railway)
    await asyncio.sleep(0.6)  # a few ticks of traffic on this deployment
    answer = httpx.post(
        sandbox.env["RUNBOOK_RAILWAY_ENDPOINT"],
        headers={"Authorization": f"Bearer {sandbox.env['RUNBOOK_RAILWAY_TOKEN']}"},
        json={
            "query": "query($id: String!) { httpLogs(deploymentId: $id, limit: 5)"
            " { path httpStatus totalDuration } }",
            "variables": {"id": live.latest_deployment_id},
        },
    ).json()
    logs = answer["data"]["httpLogs"]
    assert logs and all(x["path"] == "/v1/chat" and x["totalDuration"] > 0 for x in logs)

    ls = httpx.Client(
        base_url=sandbox.env["RUNBOOK_LANGSMITH_URL"],
        headers={"x-api-key": sandbox.env["RUNBOOK_LANGSMITH_API_KEY"]},
    )
    with ls:
        project = ls.get(
            "/api/v1/sessions", params={"name": sandbox.env["RUNBOOK_LANGSMITH_PROJECT"]}
        ).json()[0]
        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        page = ls.post(
            "/api/v2/runs/query",
            json={
                "project_ids": [project["id"]],
                "min_start_time": since,
                "page_size": 3,
                "filter": 'eq(run_type, "llm")',
                "has_error": False,
            },
        ).json()
        assert len(page["runs"]) == 3 and page["cursors"]["next"] == "3"
        assert all(r["run_type"] == "llm" and r["error"] is None for r in page["runs"])
        bad = ls.post(
            "/api/v2/runs/query", json={"project_ids": [project["id"]], "filter": "gt(latency"}
        )
        assert bad.status_code == 400
