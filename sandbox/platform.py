"""The simulated platform's state and the rules that turn it into behaviour.

One `Platform` object lives in the sandbox process (one asyncio loop, so no locks). Fakes read
it to decide how to answer, mutations change it, and every mutation is journaled. What a chat
request experiences (`simulate_chat`) is a pure function of this state plus chance:

    current deployment defect  errors → ~15 % application errors; outage → every request fails
    DEFAULT_MODEL              the primary model fails while an LLM fault is active
    REQUEST_QUEUE_ENABLED      rate-limited requests wait (+3 s) instead of failing
    MAINTENANCE_MODE           chat answers 503 "maintenance"; /health says so; no traffic
    integration-outage         intents that call Shopify (or Gorgias) fail
    high-load                  latency ∝ 1 / replicas (P99 > 10 s below 5 replicas)
    db-down / pool exhausted   database errors;  slow-queries / redis-slow  added latency
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FAULTS = (
    "bad-deploy",
    "llm-rate-limit",
    "llm-outage",
    "integration-outage",
    "db-pool-exhausted",
    "db-down",
    "slow-queries",
    "redis-slow",
    "complete-outage",
    "high-load",
)
INTEGRATION_TARGETS = ("shopify", "gorgias")
INTENTS = {
    # intent: (weight, integration it calls)
    "order_status": (30, "shopify"),
    "refund_request": (15, "shopify"),
    "product_question": (25, None),
    "shipping_info": (15, "shopify"),
    "complaint": (10, "gorgias"),
    "other": (5, None),
}
BAD_DEPLOY_ERROR_RATE = 0.18
BACKGROUND_ERROR_RATE = 0.001  # a healthy platform still fails now and then
FALLBACK_SPEEDUP = 0.7  # the smaller model answers faster ("consider model downgrade for speed")
QUEUE_DELAY_S = 3.0


def now() -> float:
    return time.time()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Deployment:
    id: str
    status: str
    created_at: float
    commit: str
    defect: str | None = None  # None | "errors" | "outage"
    expired: bool = False  # image no longer retained: cannot roll back to it
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    name: str
    target: str | None
    injected_at: float
    expires_at: float | None


@dataclass
class ChatOutcome:
    intent: str
    model: str
    latency_s: float
    error: str | None
    llm_error: str | None
    tokens: int


class Platform:
    """Everything the fakes share: deployments, variables, replicas, faults, journal, sinks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.primary_model: str = config["primary_model"]
        self.fallback_model: str = config["fallback_model"]
        self.project_id: str = config["railway_project_id"]
        self.environment_id: str = config["railway_environment_id"]
        self.service_id: str = config["railway_service_id"]
        self.region = "us-west2"
        self.replicas = 2
        self.limits: dict[str, float] = {"vCPUs": 2.0, "memoryGB": 2.0}
        self.variables: dict[str, str] = {
            "DEFAULT_MODEL": self.primary_model,
            "DATABASE_POOL_SIZE": "10",
            "OPENAI_API_KEY": config["llm_api_key"],
        }
        self._ids = itertools.count(1)
        self.deployments: list[Deployment] = []
        self.current_id = ""
        self.faults: dict[str, Fault] = {}
        self.journal: list[dict[str, Any]] = []
        self.sinks: dict[str, list[dict[str, Any]]] = {"slack": [], "pagerduty": []}
        self.logs: deque[dict[str, Any]] = deque(maxlen=5000)
        self.http_logs: deque[dict[str, Any]] = deque(maxlen=5000)
        self.runs: deque[dict[str, Any]] = deque(maxlen=60000)
        self.listeners: list[Any] = []  # callables(event: str) run after state changes
        self._seed_deployments()

    # -- deployments -------------------------------------------------------------------------
    def _seed_deployments(self) -> None:
        start = now() - 7 * 86400
        history = [
            ("SUCCESS", True, None),  # old: image expired, cannot roll back
            ("SUCCESS", False, None),
            ("FAILED", False, None),
            ("SUCCESS", False, None),
        ]
        for i, (status, expired, defect) in enumerate(history):
            dep = self._new_deployment(status, defect, created_at=start + i * 86400)
            dep.expired = expired
        self.current_id = self.deployments[-1].id

    def _new_deployment(
        self,
        status: str,
        defect: str | None,
        *,
        created_at: float | None = None,
        commit: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Deployment:
        n = next(self._ids)
        dep = Deployment(
            id=f"dep-{n:04d}-{random.getrandbits(32):08x}",
            status=status,
            created_at=created_at if created_at is not None else now(),
            commit=commit or f"{random.getrandbits(40):010x}",
            defect=defect,
            meta=meta or {},
        )
        self.deployments.append(dep)
        return dep

    def deployment(self, deployment_id: str) -> Deployment | None:
        return next((d for d in self.deployments if d.id == deployment_id), None)

    @property
    def current(self) -> Deployment:
        dep = self.deployment(self.current_id)
        assert dep is not None
        return dep

    def can_rollback(self, dep: Deployment) -> bool:
        return dep.status == "SUCCESS" and not dep.expired and dep.id != self.current_id

    def can_redeploy(self, dep: Deployment) -> bool:
        return dep.status in {"SUCCESS", "CRASHED", "FAILED"} and not dep.expired

    def deploy(
        self,
        defect: str | None,
        *,
        status: str = "SUCCESS",
        commit: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Deployment:
        """A new deployment becomes current; the old one is replaced (its process restarts)."""
        dep = self._new_deployment(status, defect, commit=commit, meta=meta)
        self.current_id = dep.id
        self.emit("restart")
        return dep

    # -- faults ------------------------------------------------------------------------------
    def inject(self, name: str, seconds: float | None, target: str | None) -> None:
        if name == "bad-deploy":
            self.deploy("errors", meta={"reason": "push to main", "branch": "main"})
        elif name == "complete-outage":
            self.deploy("outage", status="CRASHED", meta={"reason": "push to main"})
        if name == "integration-outage":
            target = target or "shopify"
        expires = now() + seconds if seconds else None
        self.faults[name] = Fault(name, target, now(), expires)
        self.emit(f"inject:{name}")

    def clear(self, name: str | None = None) -> list[str]:
        names = [name] if name else list(self.faults)
        cleared = []
        for n in names:
            if self.faults.pop(n, None) is not None:
                cleared.append(n)
                if n in {"bad-deploy", "complete-outage"}:
                    for dep in self.deployments:  # a hotfix: no deployment is defective now
                        dep.defect = None
                        if dep.status == "CRASHED":
                            dep.status = "SUCCESS"
                self.emit(f"clear:{n}")
        return cleared

    def reset(self) -> list[str]:
        """Back to the baseline: no faults, primary model, 2 replicas, pool of 10 (not journaled:
        this is the game master's hand, not a client's mutation)."""
        cleared = self.clear()
        for dep in self.deployments:
            dep.defect = None
        self.variables["DEFAULT_MODEL"] = self.primary_model
        self.variables.pop("REQUEST_QUEUE_ENABLED", None)
        self.variables.pop("MAINTENANCE_MODE", None)
        if self.variables.get("DATABASE_POOL_SIZE") != "10":
            self.variables["DATABASE_POOL_SIZE"] = "10"
            self.emit("pool-size")
        self.replicas = 2
        return cleared

    def expire(self) -> list[str]:
        due = [f.name for f in self.faults.values() if f.expires_at and f.expires_at <= now()]
        return [n for d in due for n in self.clear(d)]

    def active(self, name: str) -> Fault | None:
        return self.faults.get(name)

    def cure(self, name: str) -> None:
        """A remedy removed the fault's cause (journaled by the mutation that did it)."""
        if self.faults.pop(name, None) is not None:
            self.emit(f"cured:{name}")

    def emit(self, event: str) -> None:
        for listener in list(self.listeners):
            listener(event)

    # -- journal and sinks -------------------------------------------------------------------
    def record(self, system: str, operation: str, args: dict[str, Any]) -> None:
        self.journal.append(
            {"ts": iso(now()), "system": system, "operation": operation, "args": args}
        )

    # -- behaviour ---------------------------------------------------------------------------
    def llm_failure(self, model: str) -> str | None:
        """What the LLM provider does to a request for `model`: None, rate_limit or outage."""
        if model != self.primary_model:
            return None
        if self.active("llm-outage"):
            return "outage"
        if self.active("llm-rate-limit"):
            return "rate_limit"
        return None

    def queueing(self) -> bool:
        """Runbook §3 "enable request queuing": the service variable REQUEST_QUEUE_ENABLED."""
        return self.variables.get("REQUEST_QUEUE_ENABLED", "").lower() in {"1", "true", "yes"}

    def maintenance(self) -> bool:
        """Maintenance mode (service variable MAINTENANCE_MODE): customers get a 503 page."""
        return self.variables.get("MAINTENANCE_MODE", "").lower() in {"1", "true", "yes"}

    def load_factor(self) -> float:
        if self.active("high-load"):
            return max(1.0, 16.0 / self.replicas)
        return 1.0

    def integration_down(self, name: str) -> bool:
        fault = self.active("integration-outage")
        return fault is not None and fault.target == name

    def simulate_chat(
        self,
        intent: str | None = None,
        *,
        db_error: str | None = None,
        extra_latency_s: float = 0.0,
    ) -> ChatOutcome:
        """What one customer chat experiences right now."""
        if intent is None:
            names = list(INTENTS)
            intent = random.choices(names, weights=[INTENTS[n][0] for n in names])[0]
        model = self.variables.get("DEFAULT_MODEL", self.primary_model)
        speed = FALLBACK_SPEEDUP if model == self.fallback_model else 1.0
        latency = speed * self.load_factor() * random.uniform(0.6, 1.5) + extra_latency_s
        error: str | None = None
        llm_error: str | None = None
        dep = self.current
        integration = INTENTS.get(intent, (0, None))[1]
        failure = self.llm_failure(model)
        if dep.defect == "outage":
            error = f"application: worker crashed on boot (deployment {dep.id})"
        elif db_error:
            error = db_error
        elif failure == "outage":
            llm_error = f"openai server_error: 503 The server is overloaded (model {model})"
            error = f"llm: {llm_error}"
        elif failure == "rate_limit" and self.queueing():
            latency += QUEUE_DELAY_S  # queued until the provider's window allows it
        elif failure == "rate_limit":
            llm_error = f"openai rate_limit_exceeded: 429 Rate limit reached for {model}"
            error = f"llm: {llm_error}"
        elif integration and self.integration_down(integration):
            error = f"integration: {integration} API returned 503 Service Unavailable"
        elif dep.defect == "errors" and random.random() < BAD_DEPLOY_ERROR_RATE:
            error = (
                f"application: TypeError: 'NoneType' object is not subscriptable"
                f" in handlers/{intent}.py (deployment {dep.id})"
            )
        elif random.random() < BACKGROUND_ERROR_RATE:
            error = "application: upstream timeout"
        return ChatOutcome(
            intent=intent,
            model=model,
            latency_s=round(latency, 3),
            error=error,
            llm_error=llm_error,
            tokens=0 if error else random.randint(200, 1400),
        )

    def record_chat(self, outcome: ChatOutcome, started: float, status: int) -> None:
        """Leave the traces a chat leaves: LangSmith runs, Railway logs and HTTP logs."""
        end = started + outcome.latency_s
        trace = f"{random.getrandbits(64):016x}"
        root = {
            "id": f"run-{trace}",
            "name": "support-agent",
            "run_type": "chain",
            "start_time": started,
            "end_time": end,
            "status": "error" if outcome.error else "success",
            "error": outcome.error,
            "trace_id": trace,
            "parent_run_id": None,
            "tags": [outcome.intent],
            "total_tokens": outcome.tokens,
            "session_id": self.config["langsmith_project_id"],
        }
        llm_end = started + outcome.latency_s * 0.8
        llm = {
            **root,
            "id": f"run-{trace}-llm",
            "name": "ChatOpenAI",
            "run_type": "llm",
            "end_time": llm_end,
            "parent_run_id": root["id"],
            "status": "error" if outcome.llm_error else "success",
            "error": outcome.llm_error,
            "tags": [outcome.model],
        }
        self.runs.append(root)
        self.runs.append(llm)
        dep = self.current_id
        if outcome.error:
            self.logs.append(
                {
                    "deploymentId": dep,
                    "timestamp": iso(end),
                    "severity": "error",
                    "message": f"chat failed intent={outcome.intent}: {outcome.error}",
                }
            )
        else:
            self.logs.append(
                {
                    "deploymentId": dep,
                    "timestamp": iso(end),
                    "severity": "info",
                    "message": f"chat ok intent={outcome.intent} model={outcome.model}",
                }
            )
        self.http_logs.append(
            {
                "deploymentId": dep,
                "timestamp": iso(end),
                "requestId": trace,
                "method": "POST",
                "path": "/v1/chat",
                "httpStatus": status,
                "totalDuration": int(outcome.latency_s * 1000),
            }
        )

    def snapshot(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        dep = self.current
        return {
            "deployment": {"id": dep.id, "status": dep.status, "defect": dep.defect},
            "DEFAULT_MODEL": self.variables.get("DEFAULT_MODEL"),
            "replicas": self.replicas,
            "pool_size": int(self.variables.get("DATABASE_POOL_SIZE", "10")),
            "limits": dict(self.limits),
            "faults": [
                {
                    "name": f.name,
                    "target": f.target,
                    "expires_in": round(f.expires_at - now(), 1) if f.expires_at else None,
                }
                for f in self.faults.values()
            ],
            "journal_entries": len(self.journal),
            **(extra or {}),
        }
