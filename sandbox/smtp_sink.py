"""The sandbox's mail server (runbook "Alert Channels": Email ops@example.com): an aiosmtpd
submission server on 127.0.0.1 that keeps every message it accepts in the `email` sink.

It behaves like a submission port (587) of a real provider:
* STARTTLS with a certificate from a private CA made at start (`sandbox.certs`; the CA file is
  `RUNBOOK_SMTP_CA_FILE`); nothing but EHLO/STARTTLS/NOOP/QUIT before it (530);
* AUTH PLAIN or LOGIN, only after STARTTLS (538), with the sandbox's credentials
  (`RUNBOOK_SMTP_USERNAME` / `RUNBOOK_SMTP_PASSWORD`); wrong ones get 535, MAIL before AUTH 530.

Fault `smtp-down`: a new connection is greeted `421 4.3.2 Service not available` and closed, as
a server in maintenance or overloaded does; `clear`/`reset` restore it.

A sink entry: ts, from (the From header), to (the envelope recipients), subject, body (the text
part), headers (From, To, Cc, Subject, Date, Message-ID, Content-Type), mail_from (envelope),
tls (the message came over TLS), auth_user (who logged in; never the password), size.
The body's CRLF line endings are turned into LF.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hmac
import logging
import ssl
import weakref
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sandbox.certs import Certificates
from sandbox.platform import Platform, iso, now

HOSTNAME = "smtp.sandbox.example.com"
KEPT_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "Content-Type")
MAX_MESSAGE = 1024 * 1024
REFUSAL = b"421 4.3.2 Service not available, closing transmission channel\r\n"


class _Refuse(asyncio.Protocol):
    """`smtp-down`: greet with 421 and hang up (RFC 5321 §3.8)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSAL)  # type: ignore[attr-defined]
        transport.close()


def _text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        return ""
    return str(content).replace("\r\n", "\n")


class _Handler:
    def __init__(self, sink: list[dict[str, Any]]) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink.append(
            {
                "ts": iso(now()),
                "from": str(message.get("From", "")),
                "to": list(envelope.rcpt_tos),
                "subject": str(message.get("Subject", "")),
                "body": _text_body(message),
                "headers": {h: str(message[h]) for h in KEPT_HEADERS if message[h] is not None},
                "mail_from": envelope.mail_from,
                "tls": session.ssl is not None,
                "auth_user": session.auth_data if session.authenticated else None,
                "size": len(data),
            }
        )
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """The mail server; `start()` listens, `stop()` closes the listener and open sessions."""

    def __init__(
        self,
        platform: Platform,
        port: int,
        username: str,
        password: str,
        certificates: Certificates,
    ) -> None:
        self.p = platform
        self.port = port
        self.username = username.encode()
        self.password = password.encode()
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(certificates.cert_file, certificates.key_file)
        self.handler = _Handler(platform.sinks.setdefault("email", []))
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._server: asyncio.Server | None = None
        # aiosmtpd logs every AUTH as a deprecation warning; the sandbox log is not for that
        logging.getLogger("mail.log").setLevel(logging.ERROR)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if mechanism not in {"PLAIN", "LOGIN"} or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user_ok = hmac.compare_digest(data.login, self.username)
        password_ok = hmac.compare_digest(data.password, self.password)
        if not (user_ok and password_ok):
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=data.login.decode())

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.p.active("smtp-down"):
            return _Refuse()
        session = SMTP(
            self.handler,
            hostname=HOSTNAME,
            ident="runbook sandbox ESMTP",
            tls_context=self.tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self._authenticate,
            data_size_limit=MAX_MESSAGE,
            timeout=60,
            loop=asyncio.get_running_loop(),
        )
        self.sessions.add(session)
        return session

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in list(self.sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.close()
        self.sessions.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
