"""Start a local server process, wait until it answers, stop it — the one copy of that code.

Every local stand-in (Prefect server, intake, `runbook serve`, the sandbox, benchmarks, the test
harnesses) is a child in its own session: stopping it signals the whole group (SIGTERM, then
SIGKILL after a grace), so nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child in a session of its own, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def http_ok(url: str, status: int = 200, method: str = "GET") -> Callable[[], bool]:
    """A readiness check: `url` answers `status`."""

    def check() -> bool:
        try:
            return httpx.request(method, url, timeout=1).status_code == status
        except httpx.HTTPError:
            return False

    return check


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    timeout: float,
    log: Path | None = None,
) -> None:
    """Poll `ready()` until true; a child that exits or never gets ready is stopped and named."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{name} exited with code {process.returncode}: {tail}".strip())
        if ready():
            return
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{name} did not get ready within {timeout:g} s")


def stop(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL at once (no shutdown code runs): for crash tests."""
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
