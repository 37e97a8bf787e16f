"""`runbook serve`'s warm start: each flow run is a fork of a process that already imported Prefect
and every flow — a real flow run against the test Prefect server, no patching of our code."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows import warm_start
from tests.flows.warm_probe import warm_probe

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def prefects_own_client_tls() -> Iterator[None]:
    """Importing `flows.fork_preload` points Prefect's clients at shared TLS contexts (it is meant
    for the fork server); give this test worker Prefect's own back afterwards."""
    import ssl

    import prefect.client.orchestration as orchestration

    yield
    orchestration.ssl = ssl  # type: ignore[attr-defined]


async def run_warm(
    tmp_path: Path, name: str, **params: object
) -> tuple[dict[str, object], str, int]:
    out = tmp_path / f"{name}.json"
    async with get_client() as client:
        run = await client.create_flow_run(warm_probe, parameters={"out": str(out), **params})
    process = warm_start.run_flow_in_forkserver(warm_probe, flow_run=run)
    await asyncio.to_thread(process.join, 120)
    async with get_client() as client:
        state = (await client.read_flow_run(run.id)).state
    report: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    return report, str(state.name) if state else "?", process.exitcode or 0


async def test_a_warm_run_starts_with_the_flows_already_imported_and_completes(
    prefect_server: str, tmp_path: Path
) -> None:
    report, state, exitcode = await run_warm(tmp_path, "first")
    assert state == "Completed" and exitcode == 0
    assert report["preloaded"] is True, "the run did not start from the preloaded process"
    assert report["ppid"] != os.getpid(), "forked by the fork server, not by this process"
    assert report["api"] == os.environ["PREFECT_API_URL"], "the run sees the current settings"


async def test_one_crashing_warm_run_does_not_take_the_next_one_down(
    prefect_server: str, tmp_path: Path
) -> None:
    crashed, _, exitcode = await run_warm(tmp_path, "crash", crash=True)
    assert exitcode == -9, "the run's own process died"
    report, state, _ = await run_warm(tmp_path, "after")
    assert state == "Completed" and report["pid"] != crashed["pid"]


@pytest.mark.parametrize("name", ["rollback", "scale-replicas"])
async def test_operator_flows_run_warm_with_their_annotated_parameters(
    prefect_server: str, platform_env: object, name: str
) -> None:
    """Flows whose parameters are annotated types (DeploymentId, Annotated[int, Field(...)])
    run from the warm start: the run process uses its module's flow, not a by-value copy whose
    annotations cannot be resolved (which failed every such run before it began)."""
    from flows.registry import load_flow

    flow_obj = load_flow(name)
    params = {"dry_run": True, **({"replicas": 2} if name == "scale-replicas" else {})}
    async with get_client() as client:
        run = await client.create_flow_run(flow_obj, parameters=params)
    process = warm_start.run_flow_in_forkserver(flow_obj, flow_run=run)
    await asyncio.to_thread(process.join, 180)
    async with get_client() as client:
        state = (await client.read_flow_run(run.id)).state
    assert state is not None and state.name == "Completed", state and state.message


def test_registry_flows_go_to_their_run_process_by_reference() -> None:
    from flows.registry import FLOWS, load_flow

    assert all(warm_start.by_reference(load_flow(name)) == name for name in FLOWS)
    assert warm_start.by_reference(warm_probe) is None


def test_serve_installs_the_warm_start_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.runner._starter_direct as starter

    original = starter.run_flow_in_subprocess  # type: ignore[attr-defined]
    try:
        monkeypatch.setenv("RUNBOOK_WARM_START", "0")
        assert warm_start.install() is False
        assert starter.run_flow_in_subprocess is original  # type: ignore[attr-defined]
        monkeypatch.setenv("RUNBOOK_WARM_START", "1")
        assert warm_start.install() is True
        assert starter.run_flow_in_subprocess is warm_start.run_flow_in_forkserver  # type: ignore[attr-defined]
    finally:
        starter.run_flow_in_subprocess = original  # type: ignore[attr-defined]


def test_a_forked_run_reuses_the_fork_servers_prefect_settings_only_for_the_same_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from flows import fork_preload

    importlib.reload(fork_preload)  # built now, with this environment (as the fork server does)
    built = fork_preload.settings_for_this_run()
    assert fork_preload.settings_for_this_run() is built
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "3f0c")  # the engine's per-run variable
    assert fork_preload.settings_for_this_run() is built
    # what the runner adds: every setting that is set, also those from the active profile
    exported = built.to_environment_variables(exclude_unset=True)
    for key, value in exported.items():
        if key not in os.environ:  # the runner's own environment wins, as in its merge
            monkeypatch.setenv(key, value)
    assert fork_preload.settings_for_this_run() is built
    level = "DEBUG" if built.logging.level != "DEBUG" else "ERROR"
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", level)  # a setting of the run's own
    own = fork_preload.settings_for_this_run()
    assert own is not built and own.logging.level == level


def test_a_forked_run_builds_its_settings_again_after_a_prefect_config_file_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    from flows import fork_preload

    monkeypatch.chdir(tmp_path)  # `runbook serve` started here, no prefect.toml yet
    importlib.reload(fork_preload)
    built = fork_preload.settings_for_this_run()
    assert fork_preload.settings_for_this_run() is built
    retries = built.tasks.default_retries + 7
    (tmp_path / "prefect.toml").write_text(f"[tasks]\ndefault_retries = {retries}\n")
    own = fork_preload.settings_for_this_run()
    assert own is not built and own.tasks.default_retries == retries, "the file was not read"


def test_a_forked_run_builds_its_settings_from_the_runners_context_only_when_they_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from prefect.context import SettingsContext, get_settings_context, serialize_context

    from flows import fork_preload

    importlib.reload(fork_preload)
    built = fork_preload.settings_for_this_run()
    same = serialize_context()  # what `runbook serve` sends with each run
    stripped = fork_preload.without_same_settings(same, built)
    assert stripped is not None and stripped["settings_context"] == {}
    assert same["settings_context"], "the runner's own context is left as it was"

    level = "DEBUG" if built.logging.level != "DEBUG" else "ERROR"
    other = built.model_copy(update={"logging": built.logging.model_copy(update={"level": level})})
    with SettingsContext(profile=get_settings_context().profile, settings=other):
        theirs = serialize_context()
    kept = fork_preload.without_same_settings(theirs, built)
    assert kept is theirs, "settings of the runner's own are hydrated by Prefect as before"

    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", level)  # this run builds its own settings
    own = fork_preload.settings_for_this_run()
    assert fork_preload.without_same_settings(same, own) is same


def test_prefect_api_clients_in_a_forked_run_share_one_verifying_tls_context() -> None:
    import ssl

    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    from flows import fork_preload

    fork_preload.shared_prefect_client_tls()

    def context(client: PrefectClient | SyncPrefectClient) -> ssl.SSLContext:
        return client._client._transport._pool._ssl_context  # type: ignore[union-attr,no-any-return]

    first = PrefectClient("https://prefect.example/api")
    second = SyncPrefectClient("https://prefect.example/api")
    assert context(first) is context(second), "the CA bundle was parsed again"
    assert context(first).verify_mode is ssl.CERT_REQUIRED and context(first).check_hostname

    from prefect.settings import PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        insecure = PrefectClient("https://prefect.example/api")
    assert context(insecure) is not context(first)
    assert context(insecure).verify_mode is ssl.CERT_NONE
    assert context(first).verify_mode is ssl.CERT_REQUIRED, "the shared context stays verifying"


def test_a_rewritten_ca_file_is_read_again_by_the_next_prefect_client(tmp_path: Path) -> None:
    import ssl

    import certifi
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    from flows import fork_preload

    fork_preload.shared_prefect_client_tls()
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())

    def context() -> ssl.SSLContext:
        with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(bundle)}):
            client = PrefectClient("https://prefect.example/api")
        return client._client._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]

    first = context()
    assert context() is first
    with bundle.open("a") as f:  # the operator rotates the CA bundle in place
        f.write("\n")
    assert context() is not first, "the old CA bundle stayed in use"
