"""`runbook sandbox up|down|status|inject FAULT|clear|reset|journal`.

`up` starts the sandbox as a background process (state in `$RUNBOOK_HOME/sandbox/`, default
`~/.runbook/sandbox/`), waits until it answers, and prints `export RUNBOOK_…=…` lines:
`eval "$(runbook sandbox up)"`. The other commands talk to its control endpoint.
Exit codes: 0 ok, 1 not running (or failed to start), 64 bad usage (e.g. an unknown fault).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, NoReturn

import typer

from sandbox.handle import SandboxError, SandboxHandle, start_sandbox
from sandbox.platform import FAULTS, INTEGRATION_TARGETS
from sandbox.wire import WIRE_FAULTS

KNOWN = (*FAULTS, *WIRE_FAULTS)

EXIT_OK, EXIT_NOT_RUNNING, EXIT_USAGE = 0, 1, 64

app = typer.Typer(
    help="The simulated support platform for demos, tests and game days.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def home() -> Path:
    root = os.environ.get("RUNBOOK_HOME") or str(Path.home() / ".runbook")
    return Path(root) / "sandbox"


def _state_file() -> Path:
    return home() / "state.json"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _running() -> SandboxHandle | None:
    path = _state_file()
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
        handle = SandboxHandle.attach(info["env"], int(info["pid"]), Path(info["data_dir"]))
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not handle.alive():
        path.unlink(missing_ok=True)
        return None
    return handle


def _require() -> SandboxHandle:
    handle = _running()
    if handle is None:
        _fail("the sandbox is not running (start it with `runbook sandbox up`)", EXIT_NOT_RUNNING)
    return handle


def _exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def _control(call: Any) -> Any:
    try:
        return call()
    except SandboxError as exc:
        code = EXIT_USAGE if exc.status and 400 <= exc.status < 500 else EXIT_NOT_RUNNING
        _fail(str(exc), code)


@app.command()
def up(
    port_base: int | None = typer.Option(
        None, "--port-base", help="use ports N..N+7 (default: free ports)"
    ),
    foreground: bool = typer.Option(False, "--foreground", help="stay attached; Ctrl-C stops"),
) -> None:
    """Start the sandbox and print the environment that points our clients at it."""
    if port_base is not None and not 1024 <= port_base <= 65000:
        _fail("--port-base must be between 1024 and 65000", EXIT_USAGE)
    existing = _running()
    if existing is not None:
        typer.echo(f"# sandbox already running (pid {existing.pid})", err=True)
        typer.echo(_exports(existing.env))
        return
    data_dir = home() / "data"
    try:
        handle = start_sandbox(port_base=port_base, data_dir=data_dir, exit_with_parent=foreground)
    except SandboxError as exc:
        _fail(str(exc), EXIT_NOT_RUNNING)
    except OSError as exc:
        _fail(f"could not start the sandbox: {exc.strerror or exc}", EXIT_NOT_RUNNING)
    _state_file().write_text(
        json.dumps({"pid": handle.pid, "env": handle.env, "data_dir": str(data_dir)})
    )
    _state_file().chmod(0o600)  # it holds the (sandbox) credentials
    typer.echo(_exports(handle.env))
    if not foreground:
        return
    typer.echo(f"# sandbox running (pid {handle.pid}); Ctrl-C stops it", err=True)
    try:
        while handle.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    handle.stop()
    _state_file().unlink(missing_ok=True)


@app.command()
def down() -> None:
    """Stop the sandbox (its database is dropped; embedded servers it started stop)."""
    handle = _require()
    handle.stop()
    _state_file().unlink(missing_ok=True)
    typer.echo("sandbox stopped")


@app.command()
def status(
    json_output: bool = typer.Option(False, "--json", help="print the raw state as JSON"),
) -> None:
    """Current deployment, DEFAULT_MODEL, replicas, pool size and active faults."""
    handle = _require()
    state = _control(handle.state)
    if json_output:
        typer.echo(json.dumps(state, indent=2))
        return
    dep = state["deployment"]
    faults = ", ".join(
        [f["name"] + (f"({f['target']})" if f.get("target") else "") for f in state["faults"]]
        + [f"{w['name']}(next {w['remaining']})" for w in state.get("wire_faults", [])]
    )
    typer.echo(f"pid           {handle.pid}")
    typer.echo(f"deployment    {dep['id']} {dep['status']}")
    typer.echo(f"DEFAULT_MODEL {state['DEFAULT_MODEL']}")
    typer.echo(f"replicas      {state['replicas']}")
    typer.echo(f"pool size     {state['pool_size']}")
    typer.echo(f"rds           {state['rds']['status']} ({state['rds']['zone']})")
    typer.echo(f"faults        {faults or 'none'}")
    typer.echo(f"journal       {state['journal_entries']} mutations")


@app.command()
def inject(
    fault: str = typer.Argument(..., help=f"one of: {', '.join(KNOWN)}"),
    seconds: float | None = typer.Option(None, "--for", help="clear by itself after SECONDS"),
    target: str | None = typer.Option(
        None, "--target", help="integration-outage: shopify|gorgias; key-leak: store ids (a,b)"
    ),
    count: int | None = typer.Option(None, "--count", help="wire faults: the next N requests"),
    hold_s: float | None = typer.Option(None, "--hold", help="timeout wire faults: hold SECONDS"),
    on: str | None = typer.Option(None, "--on", help="railway wire faults: any|query|mutation"),
) -> None:
    """Inject a fault into the running sandbox (wire faults: armed for the next N requests)."""
    if fault not in KNOWN:
        _fail(f"unknown fault {fault!r}; known: {', '.join(KNOWN)}", EXIT_USAGE)
    if target is not None and fault != "key-leak" and target not in INTEGRATION_TARGETS:
        _fail("--target must be shopify or gorgias (key-leak: store ids)", EXIT_USAGE)
    if seconds is not None and seconds <= 0:
        _fail("--for must be a positive number of seconds", EXIT_USAGE)
    if fault in FAULTS and (count, hold_s, on) != (None, None, None):
        _fail("--count, --hold and --on apply to wire faults only", EXIT_USAGE)
    handle = _require()
    _control(lambda: handle.inject(fault, seconds, target, count=count, hold_s=hold_s, on=on))
    typer.echo(f"injected {fault}" + (f" for {seconds:g} s" if seconds else ""))


@app.command()
def clear(fault: str | None = typer.Argument(None, help="one fault (default: all)")) -> None:
    """Clear injected faults (one or all)."""
    if fault is not None and fault not in KNOWN:
        _fail(f"unknown fault {fault!r}; known: {', '.join(KNOWN)}", EXIT_USAGE)
    handle = _require()
    result = _control(lambda: handle.clear(fault))
    typer.echo("cleared " + (", ".join(result["cleared"]) or "nothing"))


@app.command()
def reset() -> None:
    """Clear every fault and restore the baseline (primary model, 2 replicas, pool of 10)."""
    handle = _require()
    _control(handle.reset)
    typer.echo("sandbox reset to baseline")


@app.command()
def journal() -> None:
    """Every mutation clients made, one JSON object per line."""
    handle = _require()
    for entry in _control(handle.journal):
        typer.echo(json.dumps(entry))
