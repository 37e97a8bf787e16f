"""The processes behind `runbook demo` (and the end-to-end tests): a local Prefect server, the
sandbox, our ops database, the alert intake and the served flows — all on 127.0.0.1, all
stopped by `stop()` (only what this stack started, by PID/process group)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
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
from sandbox.local.prefect_server import LocalPrefectServer, free_port


class Stack:
    def __init__(
        self, home: Path, *, flows: int, ui: bool = True, prefect_on_postgres: bool = False
    ) -> None:
        """`flows`: how many deployments `runbook serve` registers (ready when all are).
        `prefect_on_postgres`: the Prefect server keeps its state in a fresh database on the
        ops PostgreSQL server (as production does) instead of its embedded SQLite."""
        self.home = home
        self.prefect_on_postgres = prefect_on_postgres
        self.prefect_db = ""
        self.ui = ui
        self.flows = flows
        self.server: LocalPrefectServer | None = None
        self.sandbox: Any = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.ops_admin_url = ""
        self.ops_db = ""
        self.env: dict[str, str] = {}
        self.intake_url = ""
        self.alert_token = secrets.token_urlsafe(24)

    def start(self, say: Any = print) -> None:
        from sandbox.handle import start_sandbox
        from sandbox.local.embedded import postgres_url

        self.home.mkdir(parents=True, exist_ok=True)
        admin = postgres_url(os.environ.get("RUNBOOK_OPS_DATABASE_URL"), self.home / "ops-pg")
        self.ops_admin_url = admin
        prefect_url = None
        if self.prefect_on_postgres:
            self.prefect_db = self._new_database("runbook_prefect")
            prefect_url = self._database_url(self.prefect_db, scheme="postgresql+asyncpg")
        say(f"starting the Prefect server ({'PostgreSQL' if prefect_url else 'embedded SQLite'}) …")
        self.server = LocalPrefectServer(
            self.home / "prefect-server",
            ui=self.ui,
            extra_env={"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2"},
            database_url=prefect_url,
        )
        self.server.start(timeout=120.0 if prefect_url else 60.0)
        say("starting the sandbox platform …")
        self.sandbox = start_sandbox(data_dir=self.home / "sandbox")
        self.ops_db = self._new_database("runbook_demo")
        port = free_port()
        self.intake_url = f"http://127.0.0.1:{port}"
        self.env = {
            **self.sandbox.env,
            **self.sandbox.extra_env,  # our customer status page, the OpenAI admin API
            "PREFECT_API_URL": self.server.api_url,
            "PREFECT_HOME": str(self.home / "prefect-client"),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            # runs start on Prefect's events (flows/serve.py); the poll is the fallback, at the
            # production default (each poll is a write on the Prefect server's SQLite)
            "RUNBOOK_SERVE_POLL_S": "1",
            "RUNBOOK_HOME": str(self.home),
            "RUNBOOK_OPS_DATABASE_URL": self._database_url(self.ops_db),
            "RUNBOOK_ALERTMANAGER_TOKEN": self.alert_token,
            # a critical health check raises its alert through this intake, signed
            "RUNBOOK_INTAKE_URL": self.intake_url,
            "RUNBOOK_GENERIC_SECRET": secrets.token_hex(16),
            "RUNBOOK_DEMO": "1",
            # two approvers (the outage rollback needs two people); each one's own channel for
            # one-time codes is the sandbox's Slack fake
            "RUNBOOK_APPROVERS": "oncall,lead",
            "RUNBOOK_APPROVER_WEBHOOKS": json.dumps(
                dict.fromkeys(("oncall", "lead"), self.sandbox.env["RUNBOOK_SLACK_WEBHOOK_URL"])
            ),
            "RUNBOOK_APPROVAL_SECRET": secrets.token_hex(32),
            # a game day acts on one target many times an hour, and restores the primary model
            # right after its scenario (production: 6 mutations/h, 300 s between model switches)
            "RUNBOOK_MUTATION_BUDGET_PER_HOUR": "100",
            "RUNBOOK_MODEL_SWITCH_MIN_INTERVAL_S": "0",
            "RUNBOOK_APPROVAL_POLL_S": "1",
            "RUNBOOK_INTAKE_DISPATCH_POLL_S": "0.5",
            # scenarios follow each other within seconds: a new alert after a resolved one is a
            # new incident here, not a flap of the previous one (production default: 300 s)
            "RUNBOOK_INTAKE_COOLDOWN_S": "0",
        }
        os.environ.update(self.env)
        # another shell can use this stack: `. <home>/demo.env` (the printed approve line does)
        keep = ("PREFECT_API_URL", "RUNBOOK_OPS_DATABASE_URL", "RUNBOOK_HOME")
        (self.home / "demo.env").write_text(
            "".join(f"export {k}={shlex.quote(self.env[k])}\n" for k in keep)
        )
        say("starting the alert intake and serving the flows …")
        self.children.append(self._spawn(["intake", "--port", str(port)], "intake.log"))
        # the served runs log their story at INFO: the Prefect UI's Logs tab shows it
        self.children.append(
            self._spawn(["serve", "--no-schedules"], "serve.log", PREFECT_LOGGING_LEVEL="INFO")
        )
        self._wait_ready()

    def _spawn(self, args: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        """`runbook ARGS` as a child process (the console, not an import of it)."""
        cmd = [sys.executable, "-m", "runbook.cli", *args]
        return process.spawn(cmd, {**os.environ, **self.env, **env}, self.home / log)

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, child in zip(("intake", "serve"), self.children, strict=False):
                if child.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {child.returncode}; see {self.home}/{name}.log"
                    )
            try:
                intake_ok = httpx.get(f"{self.intake_url}/healthz", timeout=1).status_code == 200
                assert self.server is not None
                names = httpx.post(
                    f"{self.server.api_url}/deployments/filter", json={}, timeout=2
                ).json()
                served = {d["name"] for d in names} == {"runbook"} and len(names) >= self.flows
            except (httpx.HTTPError, ValueError):
                intake_ok = served = False
            if intake_ok and served:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the demo stack was not ready within {timeout:g} s; see {self.home}")

    def stop(self) -> None:
        for child in reversed(self.children):  # all at once, then wait for each
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in reversed(self.children):
            process.stop(child)
        self.children.clear()
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        for database in (self.ops_db, self.prefect_db):
            self._drop_database(database)
        self.ops_db = self.prefect_db = ""
        from sandbox.local.embedded import stop_embedded

        stop_embedded()

    def _new_database(self, prefix: str) -> str:
        """A fresh database on the ops PostgreSQL server; its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.ops_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def _database_url(self, name: str, scheme: str = "") -> str:
        """The URL of database `name` on the ops server (`scheme` replaces the admin URL's)."""
        base = self.ops_admin_url.rsplit("/", 1)[0]
        if scheme:
            base = f"{scheme}://{base.split('://', 1)[1]}"
        return f"{base}/{name}"

    def _drop_database(self, name: str) -> None:
        if not (self.ops_admin_url and name):
            return
        try:
            with psycopg.connect(self.ops_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass

    def pids(self) -> list[int]:
        found = [c.pid for c in self.children]
        if self.server and self.server.process:
            found.append(self.server.process.pid)
        if self.sandbox is not None:
            found.append(self.sandbox.pid)
        return found
