"""The sandbox's nameserver and mail server: what they answer, how their faults change it, and
that `clear`/`reset`/expiry restore them. Unit tests drive the resolver directly; the rest talk
to the running sandbox over UDP, TCP and SMTP with stock clients (dnspython, smtplib)."""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
from cryptography import x509
from dnslib import QTYPE, RCODE, DNSRecord

from sandbox.certs import make_certificates
from sandbox.dns_server import SandboxResolver
from sandbox.environment import API_HOST, SECRETS, SMTP_USERNAME
from sandbox.handle import SandboxError, SandboxHandle, ports_for
from sandbox.platform import FAULTS, Platform

DNS_FAULT_RCODES = {
    "dns-nxdomain": RCODE.NXDOMAIN,
    "dns-servfail": RCODE.SERVFAIL,
    "dns-noanswer": RCODE.NOERROR,
}


def platform() -> Platform:
    return Platform(
        {
            "primary_model": "gpt-4o",
            "fallback_model": "gpt-4o-mini",
            "railway_project_id": "p",
            "railway_environment_id": "e",
            "railway_service_id": "s",
            "llm_api_key": "k",
        }
    )


def ask(resolver: SandboxResolver, name: str, qtype: str = "A") -> DNSRecord | None:
    wire = resolver.answer(bytes(DNSRecord.question(name, qtype).pack()))
    return None if wire is None else DNSRecord.parse(wire)


def addresses(reply: DNSRecord | None) -> list[str]:
    assert reply is not None
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


# -- units ----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_resolver_answers_the_api_host_with_loopback_and_other_names_nxdomain() -> None:
    resolver = SandboxResolver(platform(), API_HOST)
    reply = ask(resolver, API_HOST)
    assert reply is not None and reply.header.rcode == RCODE.NOERROR
    assert addresses(reply) == ["127.0.0.1"]
    assert addresses(ask(resolver, API_HOST.upper() + ".")) == ["127.0.0.1"]
    other = ask(resolver, "www.example.com")
    assert other is not None and other.header.rcode == RCODE.NXDOMAIN and not other.rr
    aaaa = ask(resolver, API_HOST, "AAAA")
    assert aaaa is not None and aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr


@pytest.mark.unit
@pytest.mark.parametrize("fault", sorted(DNS_FAULT_RCODES))
def test_each_dns_fault_changes_the_api_hosts_answer_and_clear_restores_it(fault: str) -> None:
    p = platform()
    resolver = SandboxResolver(p, API_HOST)
    p.inject(fault, None, None)
    reply = ask(resolver, API_HOST)
    assert reply is not None
    assert reply.header.rcode == DNS_FAULT_RCODES[fault]
    assert addresses(reply) == []
    assert p.clear(fault) == [fault]
    assert addresses(ask(resolver, API_HOST)) == ["127.0.0.1"]


@pytest.mark.unit
def test_dns_timeout_fault_sends_no_reply_at_all() -> None:
    p = platform()
    resolver = SandboxResolver(p, API_HOST)
    p.inject("dns-timeout", None, None)
    assert ask(resolver, API_HOST) is None
    assert ask(resolver, "www.example.com") is not None  # only the API host is affected
    p.reset()
    assert addresses(ask(resolver, API_HOST)) == ["127.0.0.1"]


@pytest.mark.unit
def test_complete_outage_does_not_touch_dns() -> None:
    p = platform()
    resolver = SandboxResolver(p, API_HOST)
    p.inject("complete-outage", None, None)
    assert p.current.status == "CRASHED"
    assert addresses(ask(resolver, API_HOST)) == ["127.0.0.1"]


@pytest.mark.unit
def test_malformed_query_gets_no_reply() -> None:
    assert SandboxResolver(platform(), API_HOST).answer(b"\x00\x01garbage") is None


@pytest.mark.unit
def test_new_faults_are_known_and_ports_include_dns_and_smtp() -> None:
    assert {"dns-nxdomain", "dns-servfail", "dns-noanswer", "dns-timeout", "smtp-down"} <= set(
        FAULTS
    )
    ports = ports_for(20000)
    assert (ports["dns"], ports["smtp"]) == (20006, 20007)
    free = ports_for(None)
    assert len(set(free.values())) == len(free)


@pytest.mark.unit
def test_certificates_chain_to_the_ca_and_name_localhost_and_loopback(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(certs.cert_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certs.key_file.stat().st_mode & 0o077 == 0
    client = ssl.create_default_context(cafile=str(certs.ca_file))  # loads as a trust anchor
    assert client.cert_store_stats()["x509_ca"] == 1


# -- DNS over the network -------------------------------------------------------------------------
def nameserver(sandbox: SandboxHandle) -> tuple[str, int]:
    host, port = sandbox.env["RUNBOOK_DNS_NAMESERVER"].rsplit(":", 1)
    return host, int(port)


async def query(sandbox: SandboxHandle, tcp: bool, timeout: float = 2.0) -> dns.message.Message:
    host, port = nameserver(sandbox)
    request = dns.message.make_query(sandbox.env["RUNBOOK_API_HOST"], "A")
    if tcp:
        return await dns.asyncquery.tcp(request, host, port=port, timeout=timeout)
    return await dns.asyncquery.udp(request, host, port=port, timeout=timeout)


def a_records(reply: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


@pytest.mark.integration
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_nameserver_answers_the_api_host_over_udp_and_tcp(
    sandbox: SandboxHandle, tcp: bool
) -> None:
    assert sandbox.env["RUNBOOK_API_HOST"] == API_HOST
    reply = await query(sandbox, tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert a_records(reply) == ["127.0.0.1"]
    sandbox.inject("dns-servfail")
    assert (await query(sandbox, tcp)).rcode() == dns.rcode.SERVFAIL


@pytest.mark.integration
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_dns_timeout_fault_drops_queries_over_udp_and_tcp(
    sandbox: SandboxHandle, tcp: bool
) -> None:
    sandbox.inject("dns-timeout")
    with pytest.raises(dns.exception.Timeout):
        await query(sandbox, tcp, timeout=0.5)
    sandbox.clear("dns-timeout")
    assert a_records(await query(sandbox, tcp)) == ["127.0.0.1"]


@pytest.mark.integration
async def test_dns_fault_with_duration_expires_by_itself(sandbox: SandboxHandle) -> None:
    sandbox.inject("dns-nxdomain", seconds=0.5)
    assert (await query(sandbox, tcp=False)).rcode() == dns.rcode.NXDOMAIN
    deadline = time.monotonic() + 5  # the sandbox checks expiry every 0.5 s
    while sandbox.state()["faults"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert a_records(await query(sandbox, tcp=False)) == ["127.0.0.1"]


@pytest.mark.integration
def test_dns_faults_take_no_target(sandbox: SandboxHandle) -> None:
    with pytest.raises(SandboxError, match="target applies to integration-outage only"):
        sandbox.inject("dns-nxdomain", target="shopify")
    assert sandbox.state()["faults"] == []


# -- SMTP over the network ------------------------------------------------------------------------
def trusted(sandbox: SandboxHandle) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sandbox.env["RUNBOOK_SMTP_CA_FILE"])


def smtp(sandbox: SandboxHandle) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", int(sandbox.env["RUNBOOK_SMTP_PORT"]), timeout=10)


def message(subject: str, to: str = "ops@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "runbook@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Rolled back api to dep-0002.\nError rate 14% -> 0.4%.")
    return msg


@pytest.mark.integration
def test_env_points_at_the_mail_server_with_a_ca_that_verifies_it(sandbox: SandboxHandle) -> None:
    env = sandbox.env
    assert env["RUNBOOK_SMTP_HOST"] == "127.0.0.1"
    assert env["RUNBOOK_SMTP_STARTTLS"] == "true"
    assert env["RUNBOOK_SMTP_USERNAME"] == SMTP_USERNAME
    assert env["RUNBOOK_SMTP_PASSWORD"] == SECRETS["smtp_password"]
    assert env["RUNBOOK_EMAIL_TO"] == "ops@example.com"
    assert Path(env["RUNBOOK_SMTP_CA_FILE"]).read_text().startswith("-----BEGIN CERTIFICATE")
    with smtp(sandbox) as client:
        client.starttls(context=trusted(sandbox))  # raises if the certificate does not verify
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}


@pytest.mark.integration
def test_mail_server_accepts_only_after_starttls_and_auth_and_records_the_message(
    sandbox: SandboxHandle,
) -> None:
    before = len(sandbox.sink("email"))
    with smtp(sandbox) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN AHgAeA==")[0] == 530  # TLS first
        assert client.docmd("MAIL", "FROM:<runbook@example.com>")[0] == 530
        client.starttls(context=trusted(sandbox))
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
        assert client.docmd("MAIL", "FROM:<runbook@example.com>")[0] == 530  # AUTH first
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(SMTP_USERNAME, "not-the-password")
        assert refused.value.smtp_code == 535
        client.login(SMTP_USERNAME, SECRETS["smtp_password"])
        client.send_message(
            message("api rolled back"), to_addrs=["ops@example.com", "b@example.com"]
        )
    sink = sandbox.sink("email")
    assert len(sink) == before + 1
    entry = sink[-1]
    assert entry["subject"] == "api rolled back"
    assert entry["from"] == "runbook@example.com"
    assert entry["to"] == ["ops@example.com", "b@example.com"]
    assert entry["body"] == "Rolled back api to dep-0002.\nError rate 14% -> 0.4%.\n"
    assert entry["headers"]["To"] == "ops@example.com"
    assert (entry["tls"], entry["auth_user"]) == (True, SMTP_USERNAME)
    assert SECRETS["smtp_password"] not in json.dumps(sink)


@pytest.mark.integration
def test_auth_login_mechanism_works_too(sandbox: SandboxHandle) -> None:
    with smtp(sandbox) as client:
        client.starttls(context=trusted(sandbox))
        client.ehlo()
        client.user, client.password = SMTP_USERNAME, SECRETS["smtp_password"]
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235


@pytest.mark.integration
@pytest.mark.parametrize("restore", ["clear", "reset"])
def test_smtp_down_greets_421_and_hangs_up_until_cleared(
    sandbox: SandboxHandle, restore: str
) -> None:
    before = len(sandbox.sink("email"))
    sandbox.inject("smtp-down")
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtp(sandbox)
    assert refused.value.smtp_code == 421
    assert len(sandbox.sink("email")) == before
    if restore == "clear":
        sandbox.clear("smtp-down")
    else:
        sandbox.reset()
    with smtp(sandbox) as client:
        assert client.noop()[0] == 250


@pytest.mark.integration
def test_unknown_sink_lists_email(sandbox: SandboxHandle) -> None:
    with pytest.raises(SandboxError, match="email") as caught:
        sandbox.sink("fax")
    assert caught.value.status == 404
