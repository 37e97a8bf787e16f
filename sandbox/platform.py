"""The simulated platform's state: deployments, variables, replicas, faults, journal, sinks.

One `Platform` object lives in the sandbox process (one asyncio loop, so no locks). Fakes read
it to decide how to answer, mutations change it, and every mutation is journaled. What a chat
experiences follows from this state (`sandbox.behaviour`):

    current deployment defect  errors → ~15 % application errors; outage → every request fails
    DEFAULT_MODEL              the primary model fails while an LLM fault is active
    REQUEST_QUEUE_ENABLED      rate-limited requests wait (+3 s) instead of failing
    MAINTENANCE_MODE           chat answers 503 "maintenance"; /health says so; no traffic
    integration-outage         intents that call Shopify (or Gorgias) fail
    high-load                  latency ∝ 1 / replicas (P99 > 10 s below 5 replicas)
    db-down / pool exhausted   database errors;  slow-queries / redis-slow  added latency
    dns-* / smtp-down          what the nameserver answers for the API host; the mail server
                               refuses (`sandbox.dns_server`, `sandbox.smtp_sink`)

A manual deploy (`deploy_commit`) is BUILDING, then DEPLOYING, then live, `deploy_stage_s`
(config, default 1 s) per stage, moved on by the clock whenever anyone looks (`advance`); any
newer deployment supersedes a pending one (REMOVED). The commit's marker decides the outcome:
`bad…` goes live and fails ~18 % of chats (the bad-deploy fault), `fa11…` fails its build
(FAILED, never live), `dead…` crashes on boot (CRASHED, live: the complete-outage fault).
An `a1e…` commit's deployment names the app's newest Alembic migration (config
`migration_head`, `sandbox.app_migrations.HEAD`) in its meta as `migration`: its code needs it.
A second service (`other_service_id`) has deployments of its own, found only by id.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.wire import WireFaults, is_wire

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
    "dns-nxdomain",  # the API host's DNS (`sandbox.dns_server`)
    "dns-servfail",
    "dns-noanswer",
    "dns-timeout",
    "smtp-down",  # the mail server refuses connections (`sandbox.smtp_sink`)
    "key-leak",  # an attacker uses some stores' API keys (`sandbox.store_keys`)
    "openai-key-restricted",  # new OpenAI service-account keys lack model access
)
INTEGRATION_TARGETS = ("shopify", "gorgias")
BAD_COMMIT = "bad"  # commit markers of a manual deploy (see the module docstring)
FAILING_COMMIT = "fa11"
CRASHING_COMMIT = "dead"
MIGRATED_COMMIT = "a1e"  # its deployment meta names the newest migration
DEPLOY_STAGE_S = 1.0
_FAULT_OF_DEFECT = {"errors": "bad-deploy", "outage": "complete-outage"}


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
    service_id: str = ""
    stages: list[tuple[float, str]] = field(default_factory=list)  # (due at, status) to come


@dataclass
class Fault:
    name: str
    target: str | None
    injected_at: float
    expires_at: float | None


class Platform:
    """Everything the fakes share: deployments, variables, replicas, faults, journal, sinks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.primary_model: str = config["primary_model"]
        self.fallback_model: str = config["fallback_model"]
        self.project_id: str = config["railway_project_id"]
        self.environment_id: str = config["railway_environment_id"]
        self.service_id: str = config["railway_service_id"]
        self.other_service_id: str = config.get("railway_other_service_id", "svc-sbx-worker")
        self.other_current_id = ""
        self.deploy_stage_s = float(config.get("deploy_stage_s", DEPLOY_STAGE_S))
        self.migration_head: str | None = config.get("migration_head")
        self._advancing = False
        self.region = "us-west2"
        self.replicas = 2
        self.limits: dict[str, float] = {"vCPUs": 2.0, "memoryGB": 2.0}
        self.variables: dict[str, str] = {
            "DEFAULT_MODEL": self.primary_model,
            "DATABASE_POOL_SIZE": "10",
            "OPENAI_API_KEY": config["llm_api_key"],
        }
        self.baseline_variables = dict(self.variables)
        self._ids = itertools.count(1)
        self.deployments: list[Deployment] = []
        self.current_id = ""
        self.faults: dict[str, Fault] = {}
        self.wire = WireFaults()  # faults on a vendor API's wire (`sandbox.wire`)
        self.journal: list[dict[str, Any]] = []
        self.sinks: dict[str, list[dict[str, Any]]] = {
            "slack": [],
            "pagerduty": [],
            "email": [],
        }
        self.logs: deque[dict[str, Any]] = deque(maxlen=5000)
        self.http_logs: deque[dict[str, Any]] = deque(maxlen=5000)
        self.runs: deque[dict[str, Any]] = deque(maxlen=60000)
        self.listeners: list[Any] = []  # callables(event: str) run after state changes
        self.llm_key_valid: Callable[[str], bool] = lambda _key: True
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
        for i in range(2):  # the other service: an older good deployment and its live one
            worker = self._new_deployment("SUCCESS", None, created_at=start + i * 86400 + 60)
            worker.service_id = self.other_service_id
            self.other_current_id = worker.id

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
            service_id=self.service_id,
        )
        self.deployments.append(dep)
        return dep

    def deployment(self, deployment_id: str) -> Deployment | None:
        return next((d for d in self.deployments if d.id == deployment_id), None)

    @property
    def current(self) -> Deployment:
        self.advance()
        dep = self.deployment(self.current_id)
        assert dep is not None
        return dep

    @property
    def services(self) -> tuple[str, str]:
        return (self.service_id, self.other_service_id)

    def can_rollback(self, dep: Deployment) -> bool:
        live = self.current_id if dep.service_id == self.service_id else self.other_current_id
        return dep.status == "SUCCESS" and not dep.expired and dep.id != live

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
        self.supersede_pending()
        dep = self._new_deployment(status, defect, commit=commit, meta=meta)
        self.current_id = dep.id
        self.emit("restart")
        return dep

    def supersede_pending(self) -> None:
        """A newer deployment (or a reset) cancels any build still on its way."""
        self.advance()
        for old in self.deployments:
            if old.stages:
                old.stages.clear()
                old.status = "REMOVED"

    def deploy_commit(self, commit: str | None, meta: dict[str, Any]) -> Deployment:
        """A manual deploy: BUILDING now, then DEPLOYING, then live (or FAILED/CRASHED, by the
        commit's marker), `deploy_stage_s` per stage."""
        self.supersede_pending()
        sha = (commit or "").lower()
        crashes = sha.startswith(CRASHING_COMMIT)
        defect = "errors" if sha.startswith(BAD_COMMIT) else "outage" if crashes else None
        if sha.startswith(MIGRATED_COMMIT) and self.migration_head:  # its code needs it
            meta = {**meta, "migration": self.migration_head}
        dep = self._new_deployment("BUILDING", defect, commit=commit, meta=meta)
        t0, stage = now(), self.deploy_stage_s
        final = "CRASHED" if crashes else "SUCCESS"
        dep.stages = [(t0 + stage, "DEPLOYING"), (t0 + 2 * stage, final)]
        if sha.startswith(FAILING_COMMIT):
            dep.stages = [(t0 + stage, "FAILED")]
        self.log(dep.id, "info", f"build started for commit {dep.commit}")
        self.advance()
        return dep

    def rollback_other(self, target: Deployment) -> Deployment:
        """A rollback of the worker service: a new worker deployment; the API is untouched."""
        meta = {"rollbackOf": target.id}
        dep = self._new_deployment("SUCCESS", None, commit=target.commit, meta=meta)
        dep.service_id = target.service_id
        self.other_current_id = dep.id
        return dep

    def advance(self) -> None:
        """Move pending deploys on to every stage that is due (the clock is the only driver)."""
        if self._advancing:
            return
        self._advancing = True
        try:
            for dep in list(self.deployments):
                while dep.stages and dep.stages[0][0] <= now():
                    dep.status = dep.stages.pop(0)[1]
                    self._entered(dep)
        finally:
            self._advancing = False

    def _entered(self, dep: Deployment) -> None:
        if dep.status == "DEPLOYING":
            self.log(dep.id, "info", "build finished; deploying")
            return
        if dep.status == "FAILED":
            self.log(dep.id, "error", "build failed: npm ERR! code ELIFECYCLE (exit status 1)")
            return
        self.current_id = dep.id  # SUCCESS or CRASHED: it replaced the live deployment
        if dep.status == "CRASHED":
            self.log(dep.id, "error", f"worker crashed on boot (deployment {dep.id})")
        else:
            self.log(dep.id, "info", "healthcheck succeeded; deployment is live")
        fault = _FAULT_OF_DEFECT.get(dep.defect or "")
        if fault is not None:  # what the matching fault does, and what clears it
            self.faults[fault] = Fault(fault, None, now(), None)
        else:
            self.went_live_healthy()
        self.emit("restart")

    def went_live_healthy(self) -> None:
        """A deployment without a defect is live: the deploy faults are cured."""
        self.cure("bad-deploy")
        self.cure("complete-outage")

    def log(self, deployment_id: str, severity: str, message: str) -> None:
        line = {"deploymentId": deployment_id, "severity": severity, "message": message}
        self.logs.append({**line, "timestamp": iso(now())})

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
        if is_wire(name):
            return self.wire.disarm(name)
        names = [name] if name else list(self.faults)
        cleared = [] if name else self.wire.disarm()
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
        """Back to the baseline: no faults, the original service variables (primary model, pool
        of 10, the original OpenAI key, live again), 2 replicas, original limits. Not journaled:
        this is the game master's hand, not a client's mutation."""
        cleared = self.clear()
        self.supersede_pending()
        for dep in self.deployments:
            dep.defect = None
        if self.current.status == "CRASHED":  # a crashed deploy is fixed
            self.current.status = "SUCCESS"
        pool_changed = self.variables.get("DATABASE_POOL_SIZE") != "10"
        self.variables = dict(self.baseline_variables)
        self.replicas = 2
        self.limits = {"vCPUs": 2.0, "memoryGB": 2.0}
        if pool_changed:
            self.emit("pool-size")
        self.emit("reset")
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

    def snapshot(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        dep = self.current
        return {
            "deployment": {"id": dep.id, "status": dep.status, "defect": dep.defect},
            "worker_deployments": [  # the other service's, oldest first
                d.id for d in self.deployments if d.service_id == self.other_service_id
            ],
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
            "wire_faults": self.wire.snapshot(),
            "journal_entries": len(self.journal),
            **(extra or {}),
        }
