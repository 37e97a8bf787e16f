"""The scale-out stack of `test_scale_out.py`, started the way docs/operations.md says an operator
starts it (the same commands, as real processes on 127.0.0.1):

    prefect server start                     (PostgreSQL, not SQLite)
    prefect work-pool create runbook --type process
    prefect --no-prompt deploy --all         (from the project's prefect.yaml)
    prefect worker start --pool runbook      (twice: worker-a, worker-b)
    runbook sweep --every 5
    runbook intake --port …                  (twice: one ops database)

plus the sandbox platform the flows act on. Every process gets the same environment (the
sandbox's endpoints, the ops database, the safety floor), as docs/operations.md asks of every
acting host. `stop()` ends only what this stack started: each child's process group, then any
process that still carries this stack's marker in its environment (the flow-run processes a
process worker starts in sessions of their own), and drops the two databases it created.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from sandbox.local import process

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts: prefect, runbook
POOL = "runbook"
WORKERS = ("worker-a", "worker-b")
INTAKES = ("intake-a", "intake-b")
MARK = "RUNBOOK_SCALEOUT_TEST_MARK"  # in every child's environment, for the final sweep


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class ScaleOutStack:
    def __init__(self, home: Path, sandbox: Any, pg_admin_url: str) -> None:
        self.home = home
        self.sandbox = sandbox
        self.pg_admin_url = pg_admin_url
        self.mark = uuid.uuid4().hex
        suffix = uuid.uuid4().hex[:10]
        self.prefect_db = f"prefect_scaleout_{suffix}"
        self.ops_db = f"runbook_scaleout_{suffix}"
        self.prefect_db_url = _with_db(pg_admin_url, self.prefect_db)
        self.created_dbs: list[str] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []
        self.server_port = process.free_port()
        self.api_url = f"http://127.0.0.1:{self.server_port}/api"
        self.intake_urls = {name: f"http://127.0.0.1:{process.free_port()}" for name in INTAKES}
        self.alert_token = secrets.token_urlsafe(24)
        self.env: dict[str, str] = {}
        self.figures: dict[str, Any] = {}

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            for name in (self.prefect_db, self.ops_db):
                conn.execute(f'CREATE DATABASE "{name}"')
                self.created_dbs.append(name)
        sb = self.sandbox
        slack = sb.env["RUNBOOK_SLACK_WEBHOOK_URL"]
        # nothing of the test process's own Prefect/runbook settings leaks into the children
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
        self.env = {
            **base,
            **sb.env,
            **sb.extra_env,
            MARK: self.mark,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RUNBOOK_HOME": str(self.home),
            "RUNBOOK_OPS_DATABASE_URL": _with_db(self.pg_admin_url, self.ops_db),
            # the safety floor, the same on every acting process (docs/operations.md)
            "RUNBOOK_APPROVERS": "oncall,lead",
            "RUNBOOK_APPROVER_WEBHOOKS": json.dumps(dict.fromkeys(("oncall", "lead"), slack)),
            "RUNBOOK_APPROVAL_SECRET": secrets.token_hex(32),
            "RUNBOOK_APPROVAL_POLL_S": "1",
            # one sandbox target acted on several times within the hour (as in the e2e stack)
            "RUNBOOK_MUTATION_BUDGET_PER_HOUR": "100",
            "RUNBOOK_DESTRUCTIVE_BUDGET_PER_HOUR": "100",
            "RUNBOOK_MODEL_SWITCH_MIN_INTERVAL_S": "0",
            # the alert sources' credentials, the same on both intake copies
            "RUNBOOK_ALERTMANAGER_TOKEN": self.alert_token,
            "RUNBOOK_GENERIC_SECRET": secrets.token_hex(16),
            # a critical health check raises its alert through an intake (the load balancer's
            # place); no load balancer here, so copy a
            "RUNBOOK_INTAKE_URL": self.intake_urls["intake-a"],
            "RUNBOOK_INTAKE_DISPATCH_POLL_S": "0.5",
            # phases follow each other within seconds: an alert after a resolved one is a new
            # incident here, not a flap of the previous one (production default: 300 s)
            "RUNBOOK_INTAKE_COOLDOWN_S": "0",
        }
        # the intakes need only the ops database to accept alerts: they start meanwhile
        for name in INTAKES:
            port = self.intake_urls[name].rsplit(":", 1)[1]
            self._spawn(name, ["runbook", "intake", "--host", "127.0.0.1", "--port", port])
        t0 = time.monotonic()
        self._start_server()
        self.figures["prefect_server_ready_s"] = round(time.monotonic() - t0, 1)
        self.cli(["prefect", "work-pool", "create", POOL, "--type", "process"])
        for name in WORKERS:
            # started outside the checkout: the deployment's pull step must find the code
            self._spawn(
                name,
                ["prefect", "worker", "start", "--pool", POOL, "--name", name],
                RUNBOOK_PROJECT_DIR=str(REPO),
                PREFECT_WORKER_QUERY_SECONDS="1",
                PREFECT_LOGGING_LEVEL="INFO",
            )
        self._spawn("sweep", ["runbook", "sweep", "--every", "5"])
        t1 = time.monotonic()
        self.cli(["prefect", "--no-prompt", "deploy", "--all"], cwd=REPO, timeout=300)
        self.figures["deploy_all_s"] = round(time.monotonic() - t1, 1)
        self._wait_ready()

    def _client_env(self, name: str, **extra: str) -> dict[str, str]:
        home = self.home / "prefect-home" / name
        home.mkdir(parents=True, exist_ok=True)
        return {**self.env, "PREFECT_HOME": str(home), **extra}

    def _start_server(self) -> None:
        env = {
            **self._client_env("server"),
            "PREFECT_API_URL": "",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://"
            + self.prefect_db_url.split("://", 1)[1],
            "PREFECT_UI_ENABLED": "false",
            # the every-minute metrics-watch and the other schedules would add incidents and
            # acts of their own to what this test counts
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        cmd = [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.server_port),
        ]
        log = self.home / "server.log"
        child = process.spawn(cmd, env, log, cwd=self.home)
        self.children["server"] = child
        process.wait_ready(
            child,
            process.http_ok(f"{self.api_url}/health"),
            name="Prefect server (PostgreSQL)",
            timeout=180,
            log=log,
        )

    def _spawn(self, name: str, args: list[str], **extra: str) -> None:
        cmd = [str(BIN / args[0]), *args[1:]]
        self.children[name] = process.spawn(
            cmd, self._client_env(name, **extra), self.home / f"{name}.log", cwd=self.home
        )

    def cli(
        self, args: list[str], *, cwd: Path | None = None, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A command as an operator runs it, with the stack's environment."""
        done = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=self._client_env("cli", COLUMNS="250"),
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}"
            )
        return done

    def _wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        problem = "not ready"
        while time.monotonic() < deadline:
            for name, child in self.children.items():
                if child.poll() is not None:
                    tail = (self.home / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {child.returncode}:\n{tail}")
            try:
                intakes = all(
                    httpx.get(f"{url}/healthz", timeout=2).status_code == 200
                    for url in self.intake_urls.values()
                )
                online = {w["name"] for w in self.workers() if w.get("status") == "ONLINE"}
                deployments = len(self.api("POST", "/deployments/filter", {}))
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
                continue
            problem = f"intakes healthy {intakes}, workers online {sorted(online)}"
            if intakes and online >= set(WORKERS) and deployments:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the scale-out stack was not ready in {timeout:g} s: {problem}")

    # --- the Prefect API --------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        answer = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("POST", f"/work_pools/{POOL}/workers/filter", {})
        return result

    def deployments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("POST", "/deployments/filter", {})
        return result

    def flow_runs(self) -> list[dict[str, Any]]:
        """Every top-level flow run (not subflows), newest first."""
        runs: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.api(
                "POST",
                "/flow_runs/filter",
                {
                    "flow_runs": {"parent_task_run_id": {"is_null_": True}},
                    "sort": "EXPECTED_START_TIME_DESC",
                    "limit": 200,
                    "offset": offset,
                },
            )
            runs += page
            if len(page) < 200:
                return runs
            offset += 200

    def runs_of(self, incident: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.flow_runs()
            if (r.get("parameters") or {}).get("incident_id") == incident
        ]

    # --- failures ---------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL the process group of one child (no shutdown code runs)."""
        process.kill(self.children[name])
        self.killed.append(name)

    def alive(self, name: str) -> bool:
        return self.children[name].poll() is None

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        server = self.children.pop("server", None)
        for child in self.children.values():  # all at once, then wait for each
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in self.children.values():
            process.stop(child)
        self._kill_marked()  # flow-run processes left by a worker (their own sessions)
        process.stop(server, grace=15)
        self._kill_marked()
        if self.created_dbs:
            with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
                for name in self.created_dbs:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.created_dbs.clear()

    def _kill_marked(self) -> None:
        """Only processes of this user whose environment carries this stack's marker."""
        needle = f"{MARK}={self.mark}".encode()
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if entry.stat().st_uid != os.getuid():
                    continue
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
