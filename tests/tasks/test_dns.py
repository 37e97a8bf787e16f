"""`get_dns_resolution` against the sandbox's real nameserver (UDP on loopback): each DNS fault
is its own outcome, a crashed platform is not a DNS problem, and misconfiguration says so."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest
from pydantic import ValidationError

from blocks.dns import Dns, parse_nameserver
from runbook.errors import ConfigurationError
from runbook.settings import Settings, get_settings
from sandbox.handle import SandboxHandle
from tasks.dns import DnsCheck, get_dns_resolution

FAULT_OUTCOMES = {
    "dns-nxdomain": "nxdomain",
    "dns-servfail": "servfail",
    "dns-noanswer": "noanswer",
    "dns-timeout": "timeout",
}


@pytest.fixture
def sandbox(platform_env: SandboxHandle) -> Iterator[SandboxHandle]:
    """The session's sandbox, env applied; faults cleared again for whoever comes next."""
    yield platform_env
    platform_env.clear()


@pytest.fixture
def block(sandbox: SandboxHandle) -> Dns:
    return Dns.from_settings(get_settings())


async def resolve(block: Dns, host: str | None = None) -> DnsCheck:
    check: DnsCheck = await get_dns_resolution.fn(block, host)
    return check


@pytest.mark.integration
async def test_api_host_resolves_to_the_api_through_the_configured_nameserver(
    sandbox: SandboxHandle, block: Dns
) -> None:
    check = await resolve(block)
    assert (check.host, check.outcome, check.addresses) == ("api.example.com", "ok", ("127.0.0.1",))
    assert check.ok
    assert check.nameserver == sandbox.env["RUNBOOK_DNS_NAMESERVER"]
    assert "api.example.com resolves to 127.0.0.1" in check.summary
    assert sandbox.state()["dns_queries"] > 0  # it was the sandbox that answered, not the system


@pytest.mark.integration
@pytest.mark.parametrize(("fault", "outcome"), sorted(FAULT_OUTCOMES.items()))
async def test_each_dns_fault_is_its_own_outcome_and_never_raises(
    sandbox: SandboxHandle, block: Dns, fault: str, outcome: str
) -> None:
    sandbox.inject(fault)
    check = await resolve(block.model_copy(update={"timeout_s": 0.6}))
    assert check.outcome == outcome, check.summary
    assert check.addresses == () and not check.ok
    sandbox.clear(fault)
    assert (await resolve(block)).outcome == "ok"


@pytest.mark.integration
async def test_timeout_outcome_is_bounded_by_the_blocks_timeout(
    sandbox: SandboxHandle, block: Dns
) -> None:
    sandbox.inject("dns-timeout")
    check = await resolve(block.model_copy(update={"timeout_s": 0.5}))
    assert check.outcome == "timeout"
    assert 400 <= check.elapsed_ms < 1500
    assert "no answer within 0.5 s" in check.summary


@pytest.mark.integration
async def test_complete_outage_is_not_a_dns_failure(sandbox: SandboxHandle, block: Dns) -> None:
    sandbox.inject("complete-outage")
    check = await resolve(block)
    assert (check.outcome, check.addresses) == ("ok", ("127.0.0.1",))


@pytest.mark.integration
async def test_another_host_can_be_asked_and_unknown_names_are_nxdomain(block: Dns) -> None:
    check = await resolve(block, "status.example.com")
    assert (check.host, check.outcome) == ("status.example.com", "nxdomain")


@pytest.mark.integration
async def test_silent_nameserver_is_a_timeout_not_a_hang() -> None:
    from tests.tasks.netfakes import closed_port

    block = Dns(host="api.example.com", nameserver=f"127.0.0.1:{closed_port()}", timeout_s=0.4)
    check = await resolve(block)
    assert check.outcome == "timeout" and check.elapsed_ms < 1500


@pytest.mark.unit
@pytest.mark.parametrize("host", ["", "   ", "a..b.example.com", "x" * 64 + ".example.com"])
async def test_no_host_or_not_a_dns_name_is_a_configuration_error(host: str) -> None:
    block = Dns(host="api.example.com", nameserver="127.0.0.1:9", timeout_s=0.2)
    with pytest.raises(ConfigurationError, match="dns: "):
        await get_dns_resolution.fn(block, host)


@pytest.mark.unit
def test_default_host_is_api_host_else_the_host_of_the_api_url() -> None:
    from_url = Dns.from_settings(
        Settings(api_url="https://api.shop.test:8443/v1", api_host=None, dns_nameserver=None)
    )
    assert (from_url.host, from_url.nameserver, from_url.asked) == (
        "api.shop.test",
        None,
        "system resolver",
    )
    explicit = Dns.from_settings(
        Settings(api_host="api.example.com", dns_nameserver="10.0.0.2", dns_timeout_s=3)
    )
    assert (explicit.host, explicit.asked, explicit.timeout_s) == (
        "api.example.com",
        "10.0.0.2:53",
        3,
    )
    resolver = explicit.get_client()
    assert (resolver.nameservers, resolver.port, resolver.lifetime) == (["10.0.0.2"], 53, 3)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        (" 192.0.2.1:53 ", ("192.0.2.1", 53)),
    ],
)
def test_nameserver_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["dns.google", "dns.google:53", "10.0.0.2:0", "10.0.0.2:x", "[::1"])
def test_a_nameserver_that_is_not_an_address_is_refused_when_the_block_is_built(bad: str) -> None:
    with pytest.raises(ValidationError, match="nameserver"):
        Dns(host="api.example.com", nameserver=bad)


@pytest.mark.integration
def test_dns_block_round_trips_through_blocks_configure_from_env(
    prefect_server: str, sandbox: SandboxHandle
) -> None:
    env = {**os.environ, "PREFECT_API_URL": f"{prefect_server}/api", "RUNBOOK_ENVIRONMENT": "dnsrt"}
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "blocks", "configure", "--from-env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runbook-dns/dnsrt" in done.stdout
    loaded = cast(Dns, asyncio.run(Dns.aload("dnsrt")))
    assert (loaded.host, loaded.nameserver) == (
        "api.example.com",
        sandbox.env["RUNBOOK_DNS_NAMESERVER"],
    )
