"""The sandbox's authoritative nameserver for the API host (runbook §5: `dig api.example.com`).

UDP and TCP on 127.0.0.1 (`RUNBOOK_DNS_NAMESERVER`), on the sandbox's loop (it reads the
platform's faults like every other fake; no threads). The API host (`RUNBOOK_API_HOST`) has one
A record, 127.0.0.1; every other name is NXDOMAIN. Faults change what the API host answers:

    dns-nxdomain   NXDOMAIN (the record is gone: an expired domain, a deleted zone)
    dns-servfail   SERVFAIL (the authoritative servers are broken)
    dns-noanswer   NOERROR with no A record (the name exists, its address record was removed)
    dns-timeout    no reply at all, over UDP or TCP (`DNSError` from the resolver: drop)

With several active, the first active in this order wins: timeout, servfail, nxdomain, noanswer.
Other record types of the API host are NOERROR with no answer. `complete-outage` does not touch
DNS: a crashed deployment and a broken zone are different failures, and a check must be able to
tell them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from dnslib import QTYPE, RCODE, RR, SOA, A, DNSError, DNSRecord
from dnslib.server import BaseResolver

from sandbox.platform import Platform

DNS_FAULTS = ("dns-timeout", "dns-servfail", "dns-nxdomain", "dns-noanswer")  # precedence
API_ADDRESS = "127.0.0.1"
TTL = 30


class SandboxResolver(BaseResolver):  # type: ignore[misc]
    """dnslib's resolver interface: a reply, or `DNSError` to send nothing."""

    def __init__(self, platform: Platform, api_host: str) -> None:
        self.p = platform
        self.api_host = api_host.rstrip(".").lower()
        self.zone = self.api_host.split(".", 1)[-1]
        self.queries = 0

    def _fault(self) -> str | None:
        return next((f for f in DNS_FAULTS if self.p.active(f)), None)

    def _negative(self, reply: DNSRecord, rcode: int) -> DNSRecord:
        reply.header.rcode = rcode
        soa = SOA(f"ns1.{self.zone}.", f"hostmaster.{self.zone}.", (1, 3600, 600, 86400, TTL))
        reply.add_auth(RR(f"{self.zone}.", QTYPE.SOA, rdata=soa, ttl=TTL))
        return reply

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        self.queries += 1
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name != self.api_host:
            return self._negative(reply, RCODE.NXDOMAIN)
        fault = self._fault()
        if fault == "dns-timeout":
            raise DNSError("dns-timeout: the query is dropped")
        if fault == "dns-servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if fault == "dns-nxdomain":
            return self._negative(reply, RCODE.NXDOMAIN)
        if fault == "dns-noanswer" or request.q.qtype not in (QTYPE.A, QTYPE.ANY):
            return self._negative(reply, RCODE.NOERROR)
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(API_ADDRESS), ttl=TTL))
        return reply

    def answer(self, data: bytes) -> bytes | None:
        """The wire reply to one query, or None to stay silent (malformed, or dropped)."""
        try:
            return bytes(self.resolve(DNSRecord.parse(data), None).pack())
        except DNSError:
            return None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolver: SandboxResolver) -> None:
        self.resolver = resolver
        self.transport: Any = None  # asyncio's or uvloop's datagram transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.resolver.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """`SandboxResolver` served over UDP and TCP on one loopback port."""

    def __init__(self, platform: Platform, port: int, api_host: str) -> None:
        self.port = port
        self.resolver = SandboxResolver(platform, api_host)
        self._udp: asyncio.BaseTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self.resolver), local_addr=("127.0.0.1", self.port)
        )
        self._tcp = await asyncio.start_server(self._serve_tcp, "127.0.0.1", self.port)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 7766: two-byte length, then the message; several queries per connection."""
        self._conns.add(writer)
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.resolver.answer(await reader.readexactly(size))
                if reply is None:
                    continue  # a dropped query: the client waits until it gives up
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._conns):
                writer.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
