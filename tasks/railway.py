"""Railway, the deploy platform (GraphQL): deployments, variables, replicas, logs.

Reads: `get_deployments`, `get_deployment`, `get_service_instance`, `get_variable`,
`get_deployment_logs`.
Acts: `rollback_deployment`, `redeploy_service`, `restart_deployment`, `deploy_commit`,
`set_variables`, `scale_replicas`, `set_service_limits`. The runbook's
`railway redeploy --previous` does not exist; a rollback is `last_known_good()` over the
deployment list, then `deploymentRollback`.

Acts are sent once (`mutation=True`): an answer lost after the request left (timeout, dropped
connection, 5xx, a transient GraphQL error) raises `OutcomeUnknown`; the caller reconciles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from blocks.railway import Railway
from runbook import redact
from runbook.errors import (
    NotAuthorized,
    PermanentError,
    RateLimited,
    RunbookError,
    TransientError,
)
from tasks.http import retry_unless_sent, send, unknown

SERVICE = "railway"
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "DATABASE_URL", "REDIS_URL")
_TRANSIENT_CODES = {"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT", "GATEWAY_TIMEOUT"}
_TRANSIENT_MESSAGES = ("problem processing request", "internal server error", "timed out")
_RATE_LIMIT_CODES = {"RATE_LIMITED", "TOO_MANY_REQUESTS"}
_RATE_LIMIT_MESSAGES = ("rate limit", "ratelimit", "too many requests")


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: str
    created_at: datetime
    can_rollback: bool
    can_redeploy: bool
    commit: str | None = None
    service_id: str | None = None  # the Railway service it belongs to (None: not read)
    # the Alembic revision its code needs, when its meta names one (`migration`): db-downgrade
    # never undoes it while this deployment is live
    migration: str | None = None


class Deployments(BaseModel):
    """Newest first."""

    model_config = ConfigDict(frozen=True)

    items: tuple[Deployment, ...]
    current_id: str | None


class ServiceInstance(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_replicas: int
    region: str | None
    latest_deployment_id: str | None
    latest_status: str | None


class Variable(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    present: bool
    value: str | None  # None for secret-looking names: we never return secrets


class LogLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    timestamp: str
    severity: str | None
    message: str


class DeploymentLogs(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment_id: str
    lines: tuple[LogLine, ...]


class Applied(BaseModel):
    """What an act changed on Railway."""

    model_config = ConfigDict(frozen=True)

    action: str
    target: str
    new_deployment_id: str | None = None
    detail: dict[str, str] = {}


def last_known_good(deployments: Sequence[Deployment], current_id: str) -> Deployment | None:
    """The newest SUCCESS deployment older than the current one that Railway can roll back to."""
    current = next((d for d in deployments if d.id == current_id), None)
    candidates = [
        d
        for d in deployments
        if d.id != current_id
        and d.status == "SUCCESS"
        and d.can_rollback
        and (current is None or d.created_at < current.created_at)
    ]
    return max(candidates, key=lambda d: d.created_at, default=None)


def is_secret_name(name: str) -> bool:
    return any(word in name.upper() for word in _SECRET_WORDS)


def _graphql_error(error: Any, *, mutation: bool) -> RunbookError:
    """Railway reports a server-side hiccup in a 200 body: `extensions.code` INTERNAL_SERVER_ERROR
    ("Problem processing request") or a timeout → retried for a read, `OutcomeUnknown` for a
    mutation (it may have run). A rate limit refused the request before it ran: retryable even
    for a mutation. Anything else is permanent."""
    fields = error if isinstance(error, dict) else {}
    message = str(fields.get("message", "unknown error"))[:200]
    extensions = fields.get("extensions")
    code = str(extensions.get("code", "")) if isinstance(extensions, dict) else ""
    lowered = message.lower()
    if "not authorized" in lowered or code in {"UNAUTHENTICATED", "FORBIDDEN"}:
        return NotAuthorized(f"{SERVICE}: Not Authorized")
    if code in _RATE_LIMIT_CODES or any(m in lowered for m in _RATE_LIMIT_MESSAGES):
        return RateLimited(f"{SERVICE}: rate limited")
    if code in _TRANSIENT_CODES or any(m in lowered for m in _TRANSIENT_MESSAGES):
        if mutation:
            return unknown(SERVICE, f"GraphQL error ({code or message})")
        return TransientError(f"{SERVICE}: {message}")
    return PermanentError(f"{SERVICE}: {message}")


def _data(response: httpx.Response, *, mutation: bool) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):  # not Railway's answer (a proxy's page): may have run
        if mutation:
            raise unknown(SERVICE, "an answer that is not GraphQL")
        raise PermanentError(f"{SERVICE}: answer is not JSON")
    errors = body.get("errors") or []
    if errors:
        raise _graphql_error(errors[0], mutation=mutation)
    data: dict[str, Any] = body.get("data") or {}
    return data


async def _graphql(
    railway: Railway, query: str, variables: dict[str, Any], *, mutation: bool = False
) -> dict[str, Any]:
    """One GraphQL request; a read is retried once when transient. A mutation is sent once
    (only a connection that never opened, or a rate limit, is retried); a mutation's text
    counts as one even without the flag."""
    mutation = mutation or query.lstrip().startswith("mutation")
    async with railway.get_client() as client:

        async def attempt() -> dict[str, Any]:
            response = await send(
                SERVICE,
                lambda: client.post(
                    railway.endpoint, json={"query": query, "variables": variables}
                ),
                mutation=mutation,
            )
            return _data(response, mutation=mutation)

        return await retry_unless_sent(attempt, attempts=2)


def _deployment(node: dict[str, Any]) -> Deployment:
    meta = node.get("meta") or {}
    return Deployment(
        id=node["id"],
        status=node["status"],
        created_at=datetime.fromisoformat(node["createdAt"].replace("Z", "+00:00")),
        can_rollback=bool(node.get("canRollback")),
        can_redeploy=bool(node.get("canRedeploy")),
        commit=meta.get("commitHash") if isinstance(meta, dict) else None,
        service_id=node.get("serviceId"),
        migration=_migration(meta),
    )


def _migration(meta: object) -> str | None:
    named = meta.get("migration") if isinstance(meta, dict) else None
    return named.strip() if isinstance(named, str) and named.strip() else None


_DEPLOYMENT_FIELDS = "id status createdAt canRedeploy canRollback meta serviceId"


@task(name="get-railway-deployments", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_deployments(railway: Railway, first: int = 20) -> Deployments:
    """The service's deployments, newest first, and which one is live."""
    data = await _graphql(
        railway,
        "query($input: DeploymentListInput!, $first: Int, $env: String!, $svc: String!) {"
        " deployments(input: $input, first: $first)"
        f" {{ edges {{ node {{ {_DEPLOYMENT_FIELDS} }} }} }}"
        " serviceInstance(environmentId: $env, serviceId: $svc) { latestDeployment { id } } }",
        {
            "input": {
                "projectId": railway.project_id,
                "environmentId": railway.environment_id,
                "serviceId": railway.service_id,
            },
            "first": first,
            "env": railway.environment_id,
            "svc": railway.service_id,
        },
    )
    items = tuple(_deployment(e["node"]) for e in data["deployments"]["edges"])
    latest = (data.get("serviceInstance") or {}).get("latestDeployment") or {}
    return Deployments(items=items, current_id=latest.get("id"))


@task(name="get-railway-deployment", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_deployment(railway: Railway, deployment_id: str) -> Deployment:
    """One deployment of the project, any service (`deployment(id)`); a deployment Railway does
    not know is a `PermanentError` ("railway: Deployment not found")."""
    data = await _graphql(
        railway,
        f"query($id: String!) {{ deployment(id: $id) {{ {_DEPLOYMENT_FIELDS} }} }}",
        {"id": deployment_id},
    )
    return _deployment(data["deployment"])


@task(name="get-railway-service-instance", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_service_instance(railway: Railway, service_id: str | None = None) -> ServiceInstance:
    """Replica count, region and the live deployment (`railway status`) of the service, or of
    another service of the project (`railway status --service postgres`)."""
    data = await _graphql(
        railway,
        "query($env: String!, $svc: String!) { serviceInstance(environmentId: $env,"
        " serviceId: $svc) { numReplicas region latestDeployment { id status } } }",
        {"env": railway.environment_id, "svc": service_id or railway.service_id},
    )
    si = data["serviceInstance"]
    latest = si.get("latestDeployment") or {}
    return ServiceInstance(
        num_replicas=int(si.get("numReplicas") or 0),
        region=si.get("region"),
        latest_deployment_id=latest.get("id"),
        latest_status=latest.get("status"),
    )


@task(name="get-railway-variable", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_variable(railway: Railway, name: str) -> Variable:
    """One service variable (e.g. DEFAULT_MODEL); secret-looking ones report presence only."""
    data = await _graphql(
        railway,
        "query($p: String!, $e: String!, $s: String) {"
        " variables(projectId: $p, environmentId: $e, serviceId: $s) }",
        {"p": railway.project_id, "e": railway.environment_id, "s": railway.service_id},
    )
    values = data.get("variables") or {}
    present = name in values
    value = None if is_secret_name(name) or not present else str(values[name])
    return Variable(name=name, present=present, value=value)


@task(name="get-railway-deployment-logs", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_deployment_logs(
    railway: Railway, deployment_id: str, filter: str = "@level:error", limit: int = 100
) -> DeploymentLogs:
    """`railway logs` for one deployment (default: errors only)."""
    data = await _graphql(
        railway,
        "query($id: String!, $limit: Int, $filter: String) { deploymentLogs(deploymentId: $id,"
        " limit: $limit, filter: $filter) { timestamp message severity } }",
        {"id": deployment_id, "limit": limit, "filter": filter},
    )
    lines = tuple(
        LogLine(timestamp=x["timestamp"], severity=x.get("severity"), message=x["message"][:500])
        for x in data["deploymentLogs"]
    )
    return DeploymentLogs(deployment_id=deployment_id, lines=lines)


@task(name="rollback-deployment", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def rollback_deployment(railway: Railway, deployment_id: str) -> Applied:
    """Roll the service back to `deployment_id` (must have canRollback)."""
    await _graphql(
        railway,
        "mutation($id: String!) { deploymentRollback(id: $id) }",
        {"id": deployment_id},
        mutation=True,
    )
    return Applied(action="rollback_deployment", target=deployment_id)


@task(name="redeploy-service", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def redeploy_service(railway: Railway, deployment_id: str) -> Applied:
    """`railway redeploy`: a fresh deployment of `deployment_id` (normally the live one)."""
    data = await _graphql(
        railway,
        "mutation($id: String!) { deploymentRedeploy(id: $id) { id status } }",
        {"id": deployment_id},
        mutation=True,
    )
    return Applied(
        action="redeploy_service",
        target=deployment_id,
        new_deployment_id=data["deploymentRedeploy"]["id"],
    )


@task(name="restart-deployment", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def restart_deployment(railway: Railway, deployment_id: str) -> Applied:
    """Restart the live deployment's processes (resets connections; same image)."""
    await _graphql(
        railway,
        "mutation($id: String!) { deploymentRestart(id: $id) }",
        {"id": deployment_id},
        mutation=True,
    )
    return Applied(action="restart_deployment", target=deployment_id)


@task(name="deploy-commit", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def deploy_commit(railway: Railway, commit_sha: str) -> Applied:
    """`railway deploy --commit SHA`."""
    data = await _graphql(
        railway,
        "mutation($e: String!, $s: String!, $c: String) {"
        " serviceInstanceDeployV2(environmentId: $e, serviceId: $s, commitSha: $c) }",
        {"e": railway.environment_id, "s": railway.service_id, "c": commit_sha},
        mutation=True,
    )
    return Applied(
        action="deploy_commit", target=commit_sha, new_deployment_id=data["serviceInstanceDeployV2"]
    )


@task(name="set-railway-variables", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def set_variables(
    railway: Railway, variables: dict[str, str], skip_deploys: bool = False
) -> Applied:
    """`railway vars set K=V …` (a redeploy follows unless `skip_deploys`)."""
    await _graphql(
        railway,
        "mutation($input: VariableCollectionUpsertInput!) {"
        " variableCollectionUpsert(input: $input) }",
        {
            "input": {
                "projectId": railway.project_id,
                "environmentId": railway.environment_id,
                "serviceId": railway.service_id,
                "variables": variables,
                "skipDeploys": skip_deploys,
            }
        },
        mutation=True,
    )
    shown = {k: "***" if is_secret_name(k) else v for k, v in variables.items()}
    return Applied(action="set_variables", target=railway.service_id, detail=shown)


@task(name="scale-replicas", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def scale_replicas(railway: Railway, replicas: int, region: str | None = None) -> Applied:
    """`railway scale api --replicas N` (environmentPatchCommit in the service's region)."""
    if not 1 <= replicas <= 50:
        raise PermanentError(f"{SERVICE}: replicas must be 1..50, got {replicas}")
    if region is None:  # scale where the service runs
        data = await _graphql(
            railway,
            "query($e: String!, $s: String!) { serviceInstance(environmentId: $e,"
            " serviceId: $s) { region } }",
            {"e": railway.environment_id, "s": railway.service_id},
        )
        region = data["serviceInstance"].get("region") or "us-west2"
    patch = {
        "services": {
            railway.service_id: {
                "deploy": {"multiRegionConfig": {region: {"numReplicas": replicas}}}
            }
        }
    }
    await _graphql(
        railway,
        "mutation($e: String!, $patch: EnvironmentConfig) {"
        " environmentPatchCommit(environmentId: $e, patch: $patch) }",
        {"e": railway.environment_id, "patch": patch},
        mutation=True,
    )
    return Applied(
        action="scale_replicas",
        target=railway.service_id,
        detail={"replicas": str(replicas), "region": region},
    )


@task(name="set-service-limits", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def set_service_limits(railway: Railway, vcpus: float, memory_gb: float) -> Applied:
    """Vertical scaling: CPU and memory limits per replica."""
    await _graphql(
        railway,
        "mutation($input: ServiceInstanceLimitsUpdateInput!) {"
        " serviceInstanceLimitsUpdate(input: $input) }",
        {
            "input": {
                "environmentId": railway.environment_id,
                "serviceId": railway.service_id,
                "vCPUs": vcpus,
                "memoryGB": memory_gb,
            }
        },
        mutation=True,
    )
    return Applied(
        action="set_service_limits",
        target=railway.service_id,
        detail={"vCPUs": str(vcpus), "memoryGB": str(memory_gb)},
    )


# -- secret variables (rotate-openai-key): values only ever inside a SecretStr -----------------
@task(name="get-railway-secret-variable", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_secret_variable(railway: Railway, name: str) -> SecretStr | None:
    """The value of a secret service variable (e.g. OPENAI_API_KEY, to put it back after a failed
    rotation), or None when it is not set. Registered with the log redaction at once."""
    data = await _graphql(
        railway,
        "query($p: String!, $e: String!, $s: String) {"
        " variables(projectId: $p, environmentId: $e, serviceId: $s) }",
        {"p": railway.project_id, "e": railway.environment_id, "s": railway.service_id},
    )
    values = data.get("variables") or {}
    if name not in values or values[name] in (None, ""):
        return None
    secret = SecretStr(str(values[name]))
    redact.register(secret)
    return secret


@task(name="set-railway-secret-variable", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def set_secret_variable(
    railway: Railway, name: str, value: SecretStr, skip_deploys: bool = True
) -> Applied:
    """`railway vars set NAME=…` for a secret, by default without the redeploy that would follow
    (`skipDeploys: true`: the service picks it up at the next, explicit, redeploy)."""
    await _graphql(
        railway,
        "mutation($input: VariableCollectionUpsertInput!) {"
        " variableCollectionUpsert(input: $input) }",
        {
            "input": {
                "projectId": railway.project_id,
                "environmentId": railway.environment_id,
                "serviceId": railway.service_id,
                "variables": {name: value.get_secret_value()},
                "skipDeploys": skip_deploys,
            }
        },
        mutation=True,
    )
    return Applied(
        action="set_variables",
        target=railway.service_id,
        detail={name: "***", "skipDeploys": str(skip_deploys).lower()},
    )
