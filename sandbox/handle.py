"""Start the sandbox as a child process and talk to its control endpoint (tests, demo, CLI).

with start_sandbox() as sb:
    os.environ.update(sb.env)
    sb.inject("bad-deploy")
    ...
    assert sb.journal()[-1]["operation"] == "deploymentRollback"
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

PORT_NAMES = ("api", "fakes", "aws", "pg", "redis", "moto", "dns", "smtp")


def _free_port(udp_too: bool, taken: set[int]) -> int:
    """A loopback TCP port nothing listens on, not in `taken` (for DNS: its UDP twin free too)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            if port in taken:
                continue
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise SandboxError("no free loopback port for the sandbox")


def ports_for(port_base: int | None) -> dict[str, int]:
    """`port_base`..+7 in the order of `PORT_NAMES`, else distinct free ports (DNS: TCP+UDP)."""
    if port_base:
        return {n: port_base + i for i, n in enumerate(PORT_NAMES)}
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        ports[name] = _free_port(name == "dns", set(ports.values()))
    return ports


class SandboxError(RuntimeError):
    """The sandbox did not start, or refused a control request (message is one clear line)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SandboxHandle:
    """A running sandbox: its environment, its control endpoint, and how to stop it."""

    def __init__(
        self,
        env: dict[str, str],
        pid: int,
        process: subprocess.Popen[bytes] | None,
        data_dir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.env = env
        # settings the project has no RUNBOOK_* name for yet (our customer status page)
        self.extra_env = extra_env or {}
        self.pid = pid
        self.process = process
        self.data_dir = data_dir
        self.control_url = env["RUNBOOK_SANDBOX_CONTROL_URL"]

    @classmethod
    def attach(cls, env: dict[str, str], pid: int, data_dir: Path) -> SandboxHandle:
        """A handle on a sandbox started by another process (the CLI's `up`)."""
        return cls(env, pid, None, data_dir)

    # -- control ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = httpx.request(method, f"{self.control_url}{path}", json=body, timeout=30)
        except httpx.HTTPError as exc:
            raise SandboxError(f"sandbox control endpoint unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SandboxError(str(message), response.status_code)
        return response.json()

    def inject(
        self,
        fault: str,
        seconds: float | None = None,
        target: str | None = None,
        *,
        count: int | None = None,
        hold_s: float | None = None,
        on: str | None = None,
    ) -> dict[str, Any]:
        """A platform fault, or a wire fault (`sandbox.wire`) armed for the next `count`
        matching requests (`hold_s`: how long a timeout fault holds the answer; `on`: query or
        mutation)."""
        body: dict[str, Any] = {"fault": fault}
        options = {"seconds": seconds, "target": target, "count": count, "hold_s": hold_s, "on": on}
        body.update({k: v for k, v in options.items() if v is not None})
        result: dict[str, Any] = self._request("POST", "/inject", body)
        return result

    def clear(self, fault: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/clear", {"fault": fault} if fault else {})
        return result

    def reset(self) -> dict[str, Any]:
        """Clear every fault and restore the baseline (model, replicas, pool size)."""
        result: dict[str, Any] = self._request("POST", "/reset")
        return result

    def journal(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/journal")
        return result

    def sink(self, name: str) -> list[dict[str, Any]]:
        """What was accepted: "slack", "pagerduty", "statuspage" or "email" (SMTP)."""
        result: list[dict[str, Any]] = self._request("GET", f"/sinks/{name}")
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/state")
        return result

    def alive(self) -> bool:
        """Is our sandbox process still running? (A recycled pid is not ours.)"""
        if self.process is not None:
            return self.process.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            try:
                os.kill(self.pid, 0)
            except OSError:
                return False
            return True  # no /proc here: trust the pid
        return b"sandbox.server" in cmdline

    # -- stop -------------------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> None:
        """Stop the sandbox process (it stops its own embedded servers and moto)."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return
            if self.process is None and not self.alive():
                return
            time.sleep(0.05)
        os.killpg(self.pid, signal.SIGKILL)  # its own session: only what it started
        if self.process is not None:
            self.process.wait(5)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    port_base: int | None = None,
    data_dir: Path | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    *,
    timeout: float = 90.0,
    exit_with_parent: bool = True,
    **options: Any,
) -> SandboxHandle:
    """Start the sandbox in a subprocess and wait until every endpoint answers.

    `database_url`/`redis_url` name the servers to use (default: `RUNBOOK_SANDBOX_DATABASE_URL`
    / `RUNBOOK_SANDBOX_REDIS_URL`, else the local ones, else embedded); the sandbox creates its
    own database there and drops it when stopped. With `exit_with_parent` (default) the sandbox
    stops by itself when the process that started it is gone (a killed test run leaves
    nothing). `options` tune the simulation (traffic_rps, railway_rps, rds_transition_s,
    primary_model, fallback_model).
    """
    data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="runbook-sandbox-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "data_dir": str(data_dir),
        "ports": ports_for(port_base),
        "database_url": database_url or os.environ.get("RUNBOOK_SANDBOX_DATABASE_URL"),
        "redis_url": redis_url or os.environ.get("RUNBOOK_SANDBOX_REDIS_URL"),
        "exit_with_parent": exit_with_parent,
        "parent_pid": os.getpid(),
        **options,
    }
    config_path = data_dir / "config.json"
    config_path.write_text(json.dumps(config))
    ready = data_dir / "ready.json"
    ready.unlink(missing_ok=True)
    log = (data_dir / "sandbox.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.server", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (data_dir / "sandbox.log").read_text(errors="replace").strip().splitlines()
            last = tail[-1] if tail else "no output"
            raise SandboxError(f"sandbox exited with code {process.returncode}: {last}")
        if ready.exists():
            info = json.loads(ready.read_text())
            return SandboxHandle(info["env"], info["pid"], process, data_dir, info.get("extra_env"))
        time.sleep(0.05)
    handle = SandboxHandle({"RUNBOOK_SANDBOX_CONTROL_URL": ""}, process.pid, process, data_dir)
    handle.stop()
    raise SandboxError(f"sandbox not ready within {timeout:g} s; see {data_dir / 'sandbox.log'}")
