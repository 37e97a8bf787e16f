"""The sandbox process: data stores, proxies, moto, one uvicorn server on three loopback ports.

    api port     the support API (RUNBOOK_API_URL)
    fakes port   /graphql/v2 (Railway), /openai/v1, /langsmith, /status/{name}, /slack, /pagerduty,
                 /control (state, inject, clear, journal, sinks, shutdown)
    aws port     the RDS layer in front of moto (moto itself listens on a private port)
    pg / redis   TCP proxies the API's database and Redis traffic goes through
    dns / smtp   the API host's nameserver (UDP+TCP) and the mail server (STARTTLS, AUTH)

Run as `python -m sandbox.server CONFIG.json`; when everything answers it writes
`ready.json` (pid, env) next to the config. SIGTERM or `POST /control/shutdown` stop it cleanly:
the sandbox database (and its staging twin,
`RUNBOOK_APP_STAGING_DATABASE_URL`) is dropped and embedded servers it started are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandbox.app_migrations import HEAD, stamp_baseline
from sandbox.appdb import prepare
from sandbox.behaviour import seed_history
from sandbox.certs import make_certificates
from sandbox.control import ControlEndpoints
from sandbox.dns_server import DnsServer
from sandbox.environment import (
    API_HOST,
    SECRETS,
    SMTP_USERNAME,
    STATUSPAGE_PAGE_ID,
    client_env,
    extra_env,
)
from sandbox.langsmith import LangSmithApi
from sandbox.local import embedded
from sandbox.openai_admin import OpenAiAdmin, OpenAiKeys
from sandbox.platform import Platform, now
from sandbox.proxy import TcpProxy
from sandbox.railway import RailwayApi
from sandbox.rds import RdsFront, create_instance
from sandbox.smtp_sink import SmtpSink
from sandbox.statuspage_manage import StatuspageManage
from sandbox.stores import create_database, drop_database, resolve, where, with_db
from sandbox.support_api import StoreAuth, SupportApi
from sandbox.vendors import OpenAi, Sinks, StatusPages


def bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # we install our own handlers
        yield


class Sandbox(ControlEndpoints):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.data_dir = Path(config["data_dir"])
        self.ports = config["ports"]
        self.sandbox_id = uuid.uuid4().hex[:8]
        self.dbname = f"runbook_sandbox_{self.sandbox_id}"
        self.staging_dbname = f"{self.dbname}_staging"
        self.server: _Server | None = None
        self.moto: Any = None
        self.env: dict[str, str] = {}

    # -- start ----------------------------------------------------------------------------------
    async def start(self) -> None:
        c, ports = self.config, self.ports
        moto_started = asyncio.create_task(asyncio.to_thread(self._start_moto))
        pg_server = await asyncio.to_thread(
            resolve, c.get("database_url"), 5432, embedded.postgres_url, self.data_dir / "postgres"
        )
        redis_server = await asyncio.to_thread(
            resolve, c.get("redis_url"), 6379, embedded.redis_url, self.data_dir / "redis"
        )
        self.stores = {"postgres": where(pg_server), "redis": where(redis_server)}
        self.admin_url = pg_server
        await create_database(pg_server, self.dbname)
        await create_database(pg_server, self.staging_dbname)
        direct = with_db(pg_server, self.dbname)
        staging = with_db(pg_server, self.staging_dbname)  # the app's staging database
        pg_parts, redis_parts = urlsplit(pg_server), urlsplit(redis_server)
        self.pg_proxy = TcpProxy(
            ports["pg"], pg_parts.hostname or "127.0.0.1", pg_parts.port or 5432
        )
        self.redis_proxy = TcpProxy(
            ports["redis"], redis_parts.hostname or "127.0.0.1", redis_parts.port or 6379
        )
        await self.pg_proxy.start()
        await self.redis_proxy.start()
        api_db = with_db(pg_server, self.dbname, "127.0.0.1", ports["pg"])
        redis_db = (redis_parts.path or "/0").lstrip("/") or "0"
        api_redis = with_db(redis_server, redis_db, "127.0.0.1", ports["redis"])

        platform_config = {
            "primary_model": c.get("primary_model", "gpt-4o"),
            "fallback_model": c.get("fallback_model", "gpt-4o-mini"),
            "railway_project_id": "prj-sbx-support",
            "railway_environment_id": "env-sbx-production",
            "railway_service_id": "svc-sbx-api",
            "deploy_stage_s": float(c.get("deploy_stage_s", 1.0)),
            "migration_head": HEAD,
            "llm_api_key": SECRETS["llm_api_key"],
            "langsmith_project_id": f"ls-{self.sandbox_id}",
        }
        self.platform = p = Platform(platform_config)
        await prepare(direct, p.primary_model)
        await prepare(staging, p.primary_model)
        await asyncio.to_thread(lambda: [stamp_baseline(url) for url in (direct, staging)])
        self.api = SupportApi(
            p,
            api_db_url=api_db,
            direct_db_url=direct,
            api_redis_url=api_redis,
            pg_proxy=self.pg_proxy,
            redis_proxy=self.redis_proxy,
            traffic_rps=float(c.get("traffic_rps", 8.0)),
        )
        seed_history(p)
        await moto_started
        self.rds = RdsFront(
            p,
            f"http://127.0.0.1:{ports['moto']}",
            c.get("rds_instance_id", "support-agent-db"),
            float(c.get("rds_transition_s", 3.0)),
            on_failover=lambda: p.cure("db-down"),
        )
        self.railway = RailwayApi(p, SECRETS["railway_token"], int(c.get("railway_rps", 50)))
        langsmith_project = c.get("langsmith_project", "ecommerce-support-prod")
        self.langsmith = LangSmithApi(
            p,
            SECRETS["langsmith_api_key"],
            langsmith_project,
            platform_config["langsmith_project_id"],
        )
        self.dns = DnsServer(p, ports["dns"], API_HOST)
        certificates = make_certificates(self.data_dir)
        self.smtp = SmtpSink(
            p, ports["smtp"], SMTP_USERNAME, SECRETS["smtp_password"], certificates
        )
        await self.dns.start()
        await self.smtp.start()
        self.env = client_env(
            ports,
            api_db=api_db,
            api_redis=api_redis,
            ids=platform_config,
            rds_instance_id=self.rds.instance_id,
            langsmith_project=langsmith_project,
            primary_model=p.primary_model,
            fallback_model=p.fallback_model,
            smtp_ca_file=str(certificates.ca_file),
            staging_db=staging,
        )
        self.extra_env = extra_env(ports)
        await self.api.start()

    def _start_moto(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from moto.server import ThreadedMotoServer

        self.moto = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self.ports["moto"], verbose=False
        )
        self.moto.start()
        create_instance(
            f"http://127.0.0.1:{self.ports['moto']}",
            "us-east-1",
            SECRETS["aws_access_key_id"],
            SECRETS["aws_secret_access_key"],
            self.config.get("rds_instance_id", "support-agent-db"),
        )

    # -- HTTP -----------------------------------------------------------------------------------
    def apps(self) -> dict[int, Starlette]:
        store_auth = StoreAuth(self.api)
        api = Starlette(
            routes=[
                Route("/health", self.api.health),
                Route("/health/ready", self.api.ready),
                Route("/v1/chat", self.api.chat, methods=["POST"]),
                Route("/v1/store", store_auth.whoami),
            ]
        )
        vendors = StatusPages(self.platform)
        keys = OpenAiKeys(SECRETS["llm_api_key"])
        self.platform.llm_key_valid = keys.valid
        self.platform.listeners.append(keys.on_event)
        openai = OpenAi(self.platform, keys)
        admin = OpenAiAdmin(self.platform, keys, SECRETS["openai_admin_key"])
        org = "/openai/v1/organization/projects/{project}"
        manage = StatuspageManage(self.platform, SECRETS["statuspage_api_key"], STATUSPAGE_PAGE_ID)
        sinks = Sinks(self.platform, SECRETS["slack_path"], SECRETS["pagerduty_routing_key"])
        fakes = Starlette(
            routes=[
                Route("/graphql/v2", self.railway.handle, methods=["POST"]),
                Route("/openai/v1/chat/completions", openai.completions, methods=["POST"]),
                Route("/openai/v1/models", openai.models),
                Route(f"{org}/service_accounts", admin.create_service_account, methods=["POST"]),
                Route(
                    f"{org}/service_accounts/{{account}}",
                    admin.delete_service_account,
                    methods=["DELETE"],
                ),
                Route(f"{org}/api_keys", admin.list_keys),
                Route(f"{org}/api_keys/{{key_id}}", admin.delete_key, methods=["DELETE"]),
                Route("/langsmith/api/v1/sessions", self.langsmith.sessions),
                Route("/langsmith/api/v1/runs/query", self.langsmith.query, methods=["POST"]),
                Route("/langsmith/api/v2/runs/query", self.langsmith.query, methods=["POST"]),
                Route("/status/{name}/api/v2/{what:path}", vendors.handle),
                Route("/slack/services/{rest:path}", sinks.slack, methods=["POST"]),
                Route("/pagerduty/v2/enqueue", sinks.pagerduty, methods=["POST"]),
                Route("/statuspage/v1/pages/{page_id}/incidents", manage.create, methods=["POST"]),
                Route("/statuspage/v1/pages/{page_id}/incidents", manage.list),
                Route(
                    "/statuspage/v1/pages/{page_id}/incidents/{incident_id}",
                    manage.update,
                    methods=["PATCH"],
                ),
                Route("/statuspage/v1/pages/{page_id}/incidents/{incident_id}", manage.get),
                Route("/control/state", self.control_state),
                Route("/control/store-keys", store_auth.issue_client_key, methods=["POST"]),
                Route("/control/journal", self.control_journal),
                Route("/control/sinks/{name}", self.control_sink),
                Route("/control/inject", self.control_inject, methods=["POST"]),
                Route("/control/clear", self.control_clear, methods=["POST"]),
                Route("/control/reset", self.control_reset, methods=["POST"]),
                Route("/control/shutdown", self.control_shutdown, methods=["POST"]),
            ]
        )
        aws = Starlette(routes=[Route("/{path:path}", self.rds.handle, methods=["GET", "POST"])])
        return {self.ports["api"]: api, self.ports["fakes"]: fakes, self.ports["aws"]: aws}

    def state(self) -> dict[str, Any]:
        return self.platform.snapshot(
            {
                "rds": self.rds.snapshot(),
                "sandbox_id": self.sandbox_id,
                "stores": {**self.stores, "embedded": embedded.embedded_running()},
                "db_pool_held": len(self.api.hog.held),
                "db_pool_max_size": self.api.pool.max_size,
                "slow_queries": len(self.api.slow.conns),
                "proxies": {"postgres": self.pg_proxy.mode, "redis": self.redis_proxy.mode},
                "dns_queries": self.dns.resolver.queries,
            }
        )

    # -- run / stop -----------------------------------------------------------------------------
    async def serve(self, ready_file: Path | None) -> None:
        apps = self.apps()

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            port = (scope.get("server") or ("", 0))[1]
            await apps[port](scope, receive, send)

        sockets = [bind(p) for p in apps]
        config = uvicorn.Config(dispatch, log_level="warning", lifespan="off", access_log=False)
        self.server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit)
        serving = asyncio.create_task(self.server.serve(sockets=sockets))
        if self.config.get("exit_with_parent"):
            watchdog = asyncio.create_task(self._exit_with_parent(self.config["parent_pid"]))
            serving.add_done_callback(lambda _: watchdog.cancel())
        while not self.server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if ready_file is not None and not serving.done():
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "env": self.env,
                        "extra_env": self.extra_env,
                        "ports": self.ports,
                        "started": now(),
                    }
                )
            )
            tmp.chmod(0o600)
            tmp.replace(ready_file)
        await serving

    async def _exit_with_parent(self, parent: int) -> None:
        """A test run that dies must not leave its sandbox behind."""
        while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on but time
            await asyncio.sleep(1.0)
        self._request_exit()

    def _request_exit(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    async def stop(self) -> None:
        if hasattr(self, "api"):
            with contextlib.suppress(Exception):
                await self.api.stop()
        for part in ("pg_proxy", "redis_proxy", "dns", "smtp"):
            if hasattr(self, part):
                with contextlib.suppress(Exception):  # the database is dropped regardless
                    await getattr(self, part).stop()
        if self.moto is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.moto.stop)
        with contextlib.suppress(Exception):
            await drop_database(getattr(self, "admin_url", ""), self.dbname)
        with contextlib.suppress(Exception):
            await drop_database(getattr(self, "admin_url", ""), self.staging_dbname)
        embedded.stop_embedded()


async def amain(config_path: Path, config: dict[str, Any]) -> int:
    sandbox = Sandbox(config)
    ready_file = config_path.with_name("ready.json")
    started = time.perf_counter()
    try:
        await sandbox.start()
        print(f"sandbox ready in {time.perf_counter() - started:.2f} s", file=sys.stderr)
        await sandbox.serve(ready_file)
    finally:
        ready_file.unlink(missing_ok=True)
        await sandbox.stop()
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m sandbox.server CONFIG.json", file=sys.stderr)
        raise SystemExit(64)
    path = Path(sys.argv[1])
    raise SystemExit(asyncio.run(amain(path, json.loads(path.read_text()))))


if __name__ == "__main__":
    main()
