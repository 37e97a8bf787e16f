"""DNS of the support API's host (runbook §5 Complete Outage: `dig api.example.com`)."""

from __future__ import annotations

import ipaddress
from typing import Self
from urllib.parse import urlsplit

import dns.asyncresolver
from pydantic import Field, field_validator

from blocks.base import RunbookBlock
from runbook.settings import Settings

DNS_PORT = 53


def parse_nameserver(value: str) -> tuple[str, int]:
    """`HOST[:PORT]` → (IP address, port): `10.0.0.2`, `127.0.0.1:5353`, `[::1]:53`, `::1`.

    dnspython asks nameservers by address, so HOST must be an IP address."""
    text = value.strip()
    host, port = text, str(DNS_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"nameserver {value!r}: expected [IPv6]:PORT")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"nameserver {value!r}: HOST must be an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"nameserver {value!r}: PORT must be 1-65535")
    return address, int(port)


class Dns(RunbookBlock):
    """The name to resolve and the nameserver to ask (unset: the system's resolver)."""

    _block_type_name = "Runbook DNS"
    _block_type_slug = "runbook-dns"

    host: str = Field(description="the API's host name, e.g. api.example.com")
    nameserver: str | None = Field(
        None, description="HOST[:PORT] of the nameserver to ask; unset: the system's resolver"
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="total time for one lookup")

    @field_validator("nameserver")
    @classmethod
    def _valid_nameserver(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_nameserver(value)
        return value.strip()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        host = settings.api_host or urlsplit(settings.api_url).hostname or ""
        return cls(host=host, nameserver=settings.dns_nameserver, timeout_s=settings.dns_timeout_s)

    @property
    def asked(self) -> str:
        """Who is asked, for reports: `ADDRESS:PORT`, or `system resolver`."""
        if self.nameserver is None:
            return "system resolver"
        address, port = parse_nameserver(self.nameserver)
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

    def get_client(self) -> dns.asyncresolver.Resolver:
        """A fresh resolver (no cache): the configured nameserver, else /etc/resolv.conf.

        `lifetime` bounds the whole lookup; one try may take half of it, so a lost UDP packet
        is asked again once. Raises `dns.resolver.NoResolverConfiguration` when the system has
        no nameserver."""
        if self.nameserver is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            address, port = parse_nameserver(self.nameserver)
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [address]
            resolver.port = port
        resolver.lifetime = self.timeout_s
        resolver.timeout = self.timeout_s / 2
        resolver.cache = None
        return resolver
