"""Does the API's name still resolve? (runbook §5 Complete Outage, step 2: `dig api.example.com`)

One A lookup through the `Dns` block's nameserver (else the system's resolver), told apart the
way an engineer reading `dig` would:

    ok         NOERROR with addresses
    nxdomain   NXDOMAIN: the name does not exist (expired domain, deleted record or zone)
    noanswer   NOERROR without an A record (the name exists, its address is gone)
    servfail   every nameserver answered SERVFAIL (broken zone, DNSSEC failure)
    timeout    no answer within the block's `timeout_s`
    error      anything else: nameserver unreachable or refusing, no resolver configured

Each outcome is the observation, returned in a `DnsCheck`; the task raises only
`ConfigurationError` (no host to resolve, or a name that is not a DNS name). No credentials are
involved, and messages carry only the host name and the nameserver's address.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from dns import rcode
from dns.exception import DNSException
from dns.name import Name, from_text, root
from dns.resolver import (
    NXDOMAIN,
    LifetimeTimeout,
    NoAnswer,
    NoNameservers,
    NoResolverConfiguration,
)
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.dns import Dns
from runbook.errors import ConfigurationError

Outcome = Literal["ok", "nxdomain", "noanswer", "servfail", "timeout", "error"]


class DnsCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    outcome: Outcome
    addresses: tuple[str, ...] = ()
    nameserver: str
    elapsed_ms: float
    summary: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _no_nameservers(exc: NoNameservers) -> tuple[Outcome, str]:
    """SERVFAIL if a nameserver said so; else why every nameserver failed (refused, down)."""
    errors: list[Any] = exc.kwargs.get("errors") or []
    reasons: list[str] = []
    for error in errors:
        response = error[4] if len(error) > 4 else None
        if response is not None and response.rcode() == rcode.SERVFAIL:
            return "servfail", "SERVFAIL from every nameserver asked"
        problem = error[3] if len(error) > 3 else None
        if isinstance(problem, ConnectionRefusedError):
            reasons.append("connection refused")
        elif isinstance(problem, BaseException):
            reasons.append(type(problem).__name__)
        elif problem is not None:
            reasons.append(str(problem))  # an rcode: REFUSED, NOTIMP, FORMERR
    return "error", "no nameserver answered: " + (", ".join(dict.fromkeys(reasons)) or "unknown")


def _summary(host: str, outcome: Outcome, addresses: tuple[str, ...], why: str) -> str:
    if outcome == "ok":
        return f"{host} resolves to {', '.join(addresses)}"
    return f"{host}: {why}"


def dns_name(host: str) -> Name:
    """The absolute DNS name of `host` (IDNA for non-ASCII); raises `DNSException`."""
    return from_text(host, origin=root)


@task(name="get-dns-resolution", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def get_dns_resolution(dns: Dns, host: str | None = None) -> DnsCheck:
    """Resolve the API's host (or `host`) to its A records, as `dig` would."""
    name = (host if host is not None else dns.host).strip().rstrip(".")
    if not name:
        raise ConfigurationError("dns: no host to resolve (set RUNBOOK_API_HOST or the block)")
    try:
        qname = dns_name(name)
    except DNSException as exc:
        raise ConfigurationError(f"dns: {name!r} is not a DNS name ({exc})") from None
    asked = dns.asked
    addresses: tuple[str, ...] = ()
    why = ""
    started = time.perf_counter()
    try:
        resolver = dns.get_client()
        answer = await resolver.resolve(qname, "A", search=False)
        addresses = tuple(dict.fromkeys(r.to_text() for r in answer))
        outcome: Outcome = "ok"
    except NXDOMAIN:
        outcome, why = "nxdomain", "NXDOMAIN, the name does not exist"
    except NoAnswer:
        outcome, why = "noanswer", "NOERROR but no A record"
    except NoNameservers as exc:
        outcome, why = _no_nameservers(exc)
    except LifetimeTimeout:
        outcome, why = "timeout", f"no answer within {dns.timeout_s:g} s"
    except NoResolverConfiguration:
        outcome, why = "error", "the system has no nameserver configured"
    except (DNSException, OSError) as exc:
        outcome, why = "error", f"{type(exc).__name__}: {str(exc)[:160]}"
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return DnsCheck(
        host=name,
        outcome=outcome,
        addresses=addresses,
        nameserver=asked,
        elapsed_ms=elapsed_ms,
        summary=f"{_summary(name, outcome, addresses, why)} ({elapsed_ms:.0f} ms, {asked})",
    )
