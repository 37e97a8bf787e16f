"""A real local Prefect server (embedded SQLite) for the demo, the sandbox and the tests.

`database_url` (a `postgresql+asyncpg://` URL) runs it on PostgreSQL instead, as production
does (docs/operations.md): Prefect migrates the empty database on start-up.

Migrating a fresh SQLite database takes several seconds, so a migrated template is kept per Prefect
version in the cache directory and copied for each new server: start-up is then about 3 s.
The server is a child process bound to 127.0.0.1; `stop()` ends exactly that process.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from sandbox.local import process

_MIGRATE = (
    "import asyncio\n"
    "from prefect.server.database import provide_database_interface\n"
    "asyncio.run(provide_database_interface().create_db())\n"
)


def cache_dir() -> Path:
    root = os.environ.get("RUNBOOK_CACHE_DIR") or Path.home() / ".cache" / "runbook"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


free_port = process.free_port


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def migrated_template() -> Path:
    """A migrated, checkpointed SQLite database for this Prefect version (built once)."""
    template = cache_dir() / f"prefect-{_prefect_version()}-template.db"
    if template.exists():
        return template
    building = template.with_suffix(f".{os.getpid()}.tmp")
    env = {
        **os.environ,
        "PREFECT_HOME": str(cache_dir() / "template-home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{building}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    subprocess.run([sys.executable, "-c", _MIGRATE], env=env, check=True, capture_output=True)
    with sqlite3.connect(building) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.replace(template)
    return template


class LocalPrefectServer:
    """`prefect server` on 127.0.0.1 with its own PREFECT_HOME and database."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        ui: bool = True,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.extra_env = extra_env or {}
        self.database_url = database_url
        self.home = home
        self.port = port or free_port()
        self.ui = ui
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self) -> dict[str, str]:
        """What a client process needs to talk to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = 60.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        url = self.database_url
        if url is None:
            database = self.home / "prefect.db"
            if not database.exists():
                shutil.copyfile(migrated_template(), database)
            url = f"sqlite+aiosqlite:///{database}"
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if self.ui else "false",
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_API_URL": "",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            **self.extra_env,
        }
        log = self.home / "server.log"
        self.process = process.spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env,
            log,
        )
        process.wait_ready(
            self.process,
            process.http_ok(f"{self.api_url}/health"),
            name="Prefect server",
            timeout=timeout,
            log=log,
        )

    def stop(self) -> None:
        process.stop(self.process, grace=10)
        self.process = None
