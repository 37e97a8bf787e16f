"""Railway's public GraphQL API (`/graphql/v2`), the parts the runbook uses, on graphql-core.

Auth as Railway does it: `Authorization: Bearer <token>` or `Project-Access-Token: <token>`;
anything else gets a GraphQL `Not Authorized` error. A fixed one-second window per token answers
429 with `Retry-After` and `X-RateLimit-*` once the limit is exceeded. Unknown fields fail
validation like any GraphQL server. Mutations change the platform and are journaled.
Wire faults (`sandbox.wire`: railway-timeout-after-apply, railway-500, railway-transient-error)
run the request first — a mutation is applied — and then lose or spoil its answer.
"""

from __future__ import annotations

import json
import math
from typing import Any

from graphql import GraphQLError, OperationType, get_operation_ast, graphql, parse
from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.platform import Deployment, Platform, iso, now
from sandbox.railway_schema import SCHEMA
from sandbox.wire import hold, mark

MAX_REPLICAS = 50
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "URL")
_RAILWAY_FAULTS = ("railway-timeout-after-apply", "railway-500", "railway-transient-error")
# What Railway answers (HTTP 200) when something failed on its side mid-request.
TRANSIENT_ERROR = {
    "message": "Problem processing request",
    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
}


def _masked(name: str, value: str) -> str:
    return "***" if any(w in name.upper() for w in _SECRET_WORDS) else value


class Resolvers:
    """Root value for queries and mutations (graphql-core calls `attr(info, **args)`)."""

    def __init__(self, platform: Platform) -> None:
        self.p = platform

    # -- helpers -------------------------------------------------------------------------------
    def _node(self, dep: Deployment) -> dict[str, Any]:
        return {
            "id": dep.id,
            "status": dep.status,
            "createdAt": iso(dep.created_at),
            "canRedeploy": self.p.can_redeploy(dep),
            "canRollback": self.p.can_rollback(dep),
            "meta": {"commitHash": dep.commit, **dep.meta},
            "url": None,
            "staticUrl": None,
            "projectId": self.p.project_id,
            "environmentId": self.p.environment_id,
            "serviceId": dep.service_id,
        }

    def _get(self, deployment_id: str) -> Deployment:
        dep = self.p.deployment(deployment_id)
        if dep is None:
            raise GraphQLError("Deployment not found")
        return dep

    def _check_env(self, environment_id: str | None, service_id: str | None = None) -> None:
        if environment_id is not None and environment_id != self.p.environment_id:
            raise GraphQLError("Environment not found")
        if service_id is not None and service_id not in self.p.services:
            raise GraphQLError("Service not found")

    def _after_deploy(self) -> None:
        if self.p.current.defect is None:
            self.p.went_live_healthy()

    # -- queries -------------------------------------------------------------------------------
    def deployments(
        self, _info: Any, input: dict[str, Any], first: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        service = input.get("serviceId")
        self._check_env(input.get("environmentId"), service)
        deps = [d for d in self.p.deployments if service in {None, d.service_id}]
        deps.sort(key=lambda d: d.created_at, reverse=True)
        status = input.get("status") or {}
        if status.get("in"):
            deps = [d for d in deps if d.status in status["in"]]
        if status.get("notIn"):
            deps = [d for d in deps if d.status not in status["notIn"]]
        if after:
            ids = [d.id for d in deps]
            deps = deps[ids.index(after) + 1 :] if after in ids else []
        page = deps[: first or 20]
        return {
            "edges": [{"node": self._node(d), "cursor": d.id} for d in page],
            "pageInfo": {
                "hasNextPage": len(deps) > len(page),
                "endCursor": page[-1].id if page else None,
            },
        }

    def deployment(self, _info: Any, id: str) -> dict[str, Any]:
        return self._node(self._get(id))

    def serviceInstance(self, _info: Any, environmentId: str, serviceId: str) -> dict[str, Any]:
        self._check_env(environmentId, serviceId)
        api = serviceId == self.p.service_id
        live = self.p.current if api else self._get(self.p.other_current_id)
        return {
            "id": f"si-{serviceId}",
            "serviceId": serviceId,
            "environmentId": environmentId,
            "numReplicas": self.p.replicas if api else 1,
            "region": self.p.region,
            "latestDeployment": self._node(live),
        }

    def variables(
        self,
        _info: Any,
        projectId: str,
        environmentId: str,
        serviceId: str | None = None,
        unrendered: bool | None = None,
    ) -> Any:
        self._check_env(environmentId, serviceId)
        return dict(self.p.variables)

    def deploymentLogs(
        self,
        _info: Any,
        deploymentId: str,
        limit: int | None = None,
        filter: str | None = None,
        **_: Any,
    ) -> list[dict[str, Any]]:
        self._get(deploymentId)
        level = None
        words: list[str] = []
        for token in (filter or "").split():
            if token.startswith("@level:"):
                level = token.split(":", 1)[1].lower()
            else:
                words.append(token.lower())
        lines = [
            line
            for line in self.p.logs
            if line["deploymentId"] == deploymentId
            and (level is None or line["severity"] == level)
            and all(w in line["message"].lower() for w in words)
        ]
        return [
            {**line, "attributes": [{"key": "level", "value": line["severity"]}]}
            for line in lines[-(limit or 100) :]
        ]

    def httpLogs(
        self, _info: Any, deploymentId: str, limit: int | None = None, **_: Any
    ) -> list[dict[str, Any]]:
        self._get(deploymentId)
        lines = [x for x in self.p.http_logs if x["deploymentId"] == deploymentId]
        return lines[-(limit or 100) :]

    # -- mutations -----------------------------------------------------------------------------
    def deploymentRollback(self, _info: Any, id: str) -> bool:
        target = self._get(id)
        if not self.p.can_rollback(target):
            raise GraphQLError("Deployment cannot be rolled back")
        self.p.record("railway", "deploymentRollback", {"id": id})
        if target.service_id != self.p.service_id:  # another service rolls back, not the API
            self.p.rollback_other(target)
            return True
        self.p.deploy(target.defect, commit=target.commit, meta={"rollbackOf": target.id})
        self._after_deploy()
        return True

    def deploymentRedeploy(
        self, _info: Any, id: str, usePreviousImageTag: bool | None = None
    ) -> dict[str, Any]:
        source = self._get(id)
        if not self.p.can_redeploy(source):
            raise GraphQLError("Deployment cannot be redeployed")
        self.p.record(
            "railway",
            "deploymentRedeploy",
            {"id": id, "usePreviousImageTag": bool(usePreviousImageTag)},
        )
        status = "CRASHED" if source.defect == "outage" else "SUCCESS"
        dep = self.p.deploy(
            source.defect, status=status, commit=source.commit, meta={"redeployOf": source.id}
        )
        self._after_deploy()
        return self._node(dep)

    def deploymentRestart(self, _info: Any, id: str) -> bool:
        dep = self._get(id)
        if dep.id != self.p.current_id:
            raise GraphQLError("Only the active deployment can be restarted")
        self.p.record("railway", "deploymentRestart", {"id": id})
        self.p.emit("restart")
        return True

    def serviceInstanceDeployV2(
        self, _info: Any, environmentId: str, serviceId: str, commitSha: str | None = None
    ) -> str:
        self._check_env(environmentId, serviceId)
        if serviceId != self.p.service_id:
            raise GraphQLError("Only the API service deploys commits in the sandbox")
        self.p.record(
            "railway",
            "serviceInstanceDeployV2",
            {"environmentId": environmentId, "serviceId": serviceId, "commitSha": commitSha},
        )  # BUILDING now; it goes live (or fails) stage by stage (`Platform.deploy_commit`)
        return self.p.deploy_commit(commitSha, {"reason": "manual deploy"}).id

    def _set_variables(
        self, operation: str, values: dict[str, str], replace: bool, skip_deploys: bool
    ) -> bool:
        if not all(isinstance(v, str) for v in values.values()):
            raise GraphQLError("Variable values must be strings")
        self.p.record(
            "railway",
            operation,
            {
                "variables": {k: _masked(k, v) for k, v in values.items()},
                "replace": replace,
                "skipDeploys": skip_deploys,
            },
        )
        if replace:
            self.p.variables = dict(values)
        else:
            self.p.variables.update(values)
        if "DATABASE_POOL_SIZE" in values:
            self.p.emit("pool-size")
        if not skip_deploys:  # what Railway does: the service redeploys with the new values
            self.p.deploy(
                self.p.current.defect,
                commit=self.p.current.commit,
                meta={"reason": "variables changed"},
            )
            self._after_deploy()
        return True

    def variableCollectionUpsert(self, _info: Any, input: dict[str, Any]) -> bool:
        self._check_env(input["environmentId"], input.get("serviceId"))
        variables = input["variables"]
        if not isinstance(variables, dict):
            raise GraphQLError("variables must be an object")
        return self._set_variables(
            "variableCollectionUpsert",
            variables,
            bool(input.get("replace")),
            bool(input.get("skipDeploys")),
        )

    def variableUpsert(self, _info: Any, input: dict[str, Any]) -> bool:
        self._check_env(input["environmentId"], input.get("serviceId"))
        return self._set_variables(
            "variableUpsert", {input["name"]: input["value"]}, False, bool(input.get("skipDeploys"))
        )

    def _set_replicas(self, operation: str, args: dict[str, Any], replicas: Any) -> None:
        if not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
            raise GraphQLError(f"numReplicas must be an integer from 1 to {MAX_REPLICAS}")
        self.p.record("railway", operation, {**args, "numReplicas": replicas})
        self.p.replicas = replicas
        self.p.emit("replicas")

    def environmentPatchCommit(
        self, _info: Any, environmentId: str, patch: Any, commitMessage: str | None = None
    ) -> str:
        self._check_env(environmentId)
        try:
            service = patch["services"][self.p.service_id]
            regions = service["deploy"]["multiRegionConfig"]
            (region, config), *_ = regions.items()
            replicas = config["numReplicas"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GraphQLError(
                "Invalid patch: expected services.<serviceId>.deploy."
                "multiRegionConfig.<region>.numReplicas"
            ) from exc
        self._set_replicas(
            "environmentPatchCommit", {"environmentId": environmentId, "region": region}, replicas
        )
        self.p.region = region
        return f"commit-{math.floor(now())}"

    def serviceInstanceUpdate(
        self, _info: Any, serviceId: str, input: dict[str, Any], environmentId: str | None = None
    ) -> bool:
        self._check_env(environmentId, serviceId)
        if input.get("numReplicas") is not None:
            self._set_replicas(
                "serviceInstanceUpdate", {"serviceId": serviceId}, input["numReplicas"]
            )
        return True

    def serviceInstanceLimitsUpdate(self, _info: Any, input: dict[str, Any]) -> bool:
        self._check_env(input["environmentId"], input["serviceId"])
        limits = {k: float(input[k]) for k in ("vCPUs", "memoryGB") if input.get(k) is not None}
        self.p.record("railway", "serviceInstanceLimitsUpdate", limits)
        self.p.limits.update(limits)
        return True


class RailwayApi:
    """The Starlette endpoint: auth, rate limit, then graphql-core."""

    def __init__(self, platform: Platform, token: str, rate_limit: int = 50) -> None:
        self.platform = platform
        self.token = token
        self.rate_limit = rate_limit
        self.root = Resolvers(platform)
        self._window: dict[str, tuple[int, int]] = {}

    def _authorized(self, request: Request) -> str | None:
        bearer = request.headers.get("authorization", "")
        if bearer == f"Bearer {self.token}":
            return "account"
        if request.headers.get("project-access-token") == self.token:
            return "project"
        return None

    def _limit_headers(self, key: str) -> tuple[bool, dict[str, str]]:
        second = math.floor(now())
        start, count = self._window.get(key, (second, 0))
        if start != second:
            start, count = second, 0
        count += 1
        self._window[key] = (start, count)
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - count)),
            "X-RateLimit-Reset": str(second + 1),
        }
        return count > self.rate_limit, headers

    async def handle(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            query = body["query"]
            variables = body.get("variables") or {}
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"errors": [{"message": "Body must be JSON with a string 'query'"}]},
                status_code=400,
            )
        who = self._authorized(request)
        if who is None:
            return JSONResponse(
                {
                    "data": None,
                    "errors": [
                        {"message": "Not Authorized", "extensions": {"code": "UNAUTHENTICATED"}}
                    ],
                }
            )
        limited, headers = self._limit_headers(who)
        if limited:
            return JSONResponse(
                {"errors": [{"message": "Rate limit exceeded"}]},
                status_code=429,
                headers={**headers, "Retry-After": "1"},
            )
        self.platform.advance()  # deploys in progress move on with the clock
        fault = self.platform.wire.take(_RAILWAY_FAULTS, _is_mutation(query, body))
        before = len(self.platform.journal)
        result = await graphql(
            SCHEMA,
            query,
            root_value=self.root,
            variable_values=variables,
            operation_name=body.get("operationName"),
        )
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        if fault is None:
            return JSONResponse(payload, headers=headers)
        mark(self.platform.journal, before, fault)
        if fault.name == "railway-500":
            return JSONResponse({"errors": [{"message": "Internal Server Error"}]}, 500)
        if fault.name == "railway-transient-error":
            return JSONResponse({"data": None, "errors": [TRANSIENT_ERROR]}, headers=headers)
        await hold(request, fault.hold_s)  # railway-timeout-after-apply: the answer is lost
        return JSONResponse(payload, headers=headers)


def _is_mutation(query: str, body: dict[str, Any]) -> bool:
    try:
        operation = get_operation_ast(parse(query), body.get("operationName"))
    except GraphQLError:
        return False
    return operation is not None and operation.operation == OperationType.MUTATION
