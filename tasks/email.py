"""Email to the ops mailbox (runbook "Alert Channels": Email ops@example.com), over SMTP.

One message per call, through the `Email` block's server: implicit TLS or STARTTLS (the
certificate and host name verified, against `ca_file` when set), then AUTH when a username is
configured. Failures map onto the error tree:

    could not connect, timed out connecting, greeted 4xx (421)   → TransientError (nothing sent)
    4xx to AUTH/MAIL/RCPT/DATA                                   → TransientError (not accepted)
    connection lost or timed out while sending                   → OutcomeUnknown (it may have
                                                                   been accepted: not re-sent)
    credentials refused (535)                                    → NotAuthorized
    5xx, every recipient refused, TLS certificate not trusted,
    STARTTLS or AUTH not offered                                  → PermanentError
    no server, a username without password, unusable CA file     → ConfigurationError

A transient failure is tried once more (like the HTTP clients, `tasks.http`). Messages carry
the SMTP status and a short server reason with the login and password masked — never the
password, the username or the server's address.
"""

from __future__ import annotations

import base64
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from blocks.email import Email
from runbook.errors import (
    ConfigurationError,
    NotAuthorized,
    OutcomeUnknown,
    PermanentError,
    RunbookError,
    TransientError,
)
from tasks.http import retry_unless_sent
from tasks.notify import Delivery

SERVICE = "smtp"
MASK = "********"


class EmailDelivery(Delivery):
    """The server accepted the message for these recipients (`refused`: those it did not)."""

    message_id: str
    recipients: tuple[str, ...]
    refused: tuple[str, ...] = ()


def _mailbox(value: str, what: str, error: type[RunbookError]) -> tuple[str, str]:
    """(header form, bare address) of `a@example.com` or `Name <a@example.com>`."""
    if any(c in value for c in "\r\n\0"):
        raise error(f"email: {what} {value!r} is not an email address")
    _, address = parseaddr(value.strip())
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c in address for c in " <>,;"):
        raise error(f"email: {what} {value!r} is not an email address")
    return value.strip(), address


def _one_line(text: str, limit: int = 200) -> str:
    """A header value: no line breaks (no header injection), bounded."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def compose(sender: str, recipients: list[str], subject: str, body: str) -> EmailMessage:
    """A plain-text message marked as automated (RFC 3834), with a Message-ID of our domain.

    `sender` and `recipients` are header forms (`Name <a@example.com>` or `a@example.com`)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(subject) or "(no subject)"
    message["Date"] = formatdate(usegmt=True)
    # make_msgid() without a domain would look our own name up in DNS
    message["Message-ID"] = make_msgid("runbook", domain=parseaddr(sender)[1].rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


class _Masker:
    """Hides the login in anything a server says back (plain, and as AUTH sends it, base64)."""

    def __init__(self, block: Email) -> None:
        values: set[str] = set()
        user = block.username or ""
        password = block.password.get_secret_value() if block.password else ""
        for raw in (user, password, f"\0{user}\0{password}"):
            if len(raw.strip("\0")) >= 3:
                values |= {raw, base64.b64encode(raw.encode()).decode()}
        self.values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str, limit: int = 160) -> str:
        line = " ".join(text.split())
        for value in self.values:
            line = line.replace(value, MASK)
        return line[:limit]


def _in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reply(code: int, reason: str, *, what: str) -> RunbookError:
    if code >= 500:
        return PermanentError(f"{SERVICE}: {what} refused ({code} {reason})")
    return TransientError(f"{SERVICE}: {what} failed for now ({code} {reason})")


def failure(exc: BaseException, *, sending: bool, mask: _Masker) -> RunbookError:
    """Map an aiosmtplib/OS error; `sending`: the message may have left already."""
    name = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        if exc.code < 500:
            return TransientError(f"{SERVICE}: authentication unavailable for now ({exc.code})")
        return NotAuthorized(f"{SERVICE}: the server refused the credentials ({exc.code})")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({r.code for r in exc.recipients})
        if all(code >= 500 for code in codes):
            return PermanentError(f"{SERVICE}: every recipient was refused ({codes})")
        return TransientError(f"{SERVICE}: the recipients were refused for now ({codes})")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return _reply(exc.code, mask(exc.message), what="connection")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc.code, mask(exc.message), what="message")
    verify = _in_chain(exc, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        detail = verify.verify_message or "verification failed"
        return PermanentError(f"{SERVICE}: the server's TLS certificate is not trusted ({detail})")
    if sending and isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError):
        return OutcomeUnknown(
            f"{SERVICE}: connection lost while sending ({name}); the message may have been sent"
        )
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | TimeoutError):
        return TransientError(f"{SERVICE}: timed out ({name})")
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected):
        refused = _in_chain(exc, ConnectionRefusedError) is not None
        return TransientError(f"{SERVICE}: {'connection refused' if refused else name}")
    if isinstance(exc, ssl.SSLError | OSError):
        return TransientError(f"{SERVICE}: connection failed ({name})")
    # STARTTLS or AUTH not offered, SMTPUTF8 needed, …: asking again will not help
    return PermanentError(f"{SERVICE}: {mask(str(exc))}")


async def _send_once(
    block: Email, message: EmailMessage, sender: str, recipients: list[str]
) -> EmailDelivery:
    mask = _Masker(block)
    client = block.get_client()
    try:
        await client.connect()  # greeting, EHLO, STARTTLS, AUTH
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise failure(exc, sending=False, mask=mask) from None
    try:
        refused, _ = await client.send_message(message, sender=sender, recipients=recipients)
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise failure(exc, sending=True, mask=mask) from None
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
    return EmailDelivery(
        channel="email",
        accepted=True,
        message_id=str(message["Message-ID"]),
        recipients=tuple(r for r in recipients if r not in refused),
        refused=tuple(refused),
    )


@task(name="send-email", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def send_email(
    email: Email, subject: str, body: str, to: list[str] | None = None
) -> EmailDelivery:
    """Send one plain-text message to `to` (default: the block's recipients, ops@example.com)."""
    return await _send(email, subject, body, to)


@task(name="send-secret-email", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def send_secret_email(
    email: Email, subject: str, template: str, secret: SecretStr, to: list[str]
) -> EmailDelivery:
    """One message that carries a secret to its owner (a store's new API key): `{secret}` in
    `template` is filled in only here, so the value travels as a `SecretStr` until the SMTP
    session. Sent at most once, never through the notification outbox (it keeps bodies)."""
    return await _send(email, subject, template.replace("{secret}", secret.get_secret_value()), to)


async def _send(email: Email, subject: str, body: str, to: list[str] | None) -> EmailDelivery:
    if not email.configured:
        raise ConfigurationError("email: no SMTP server configured (RUNBOOK_SMTP_HOST)")
    sender = _mailbox(email.from_address, "sender", ConfigurationError)
    if to is None:
        recipients = [_mailbox(r, "recipient", ConfigurationError) for r in email.to]
    else:
        recipients = [_mailbox(r, "recipient", PermanentError) for r in to]
    if not recipients:
        raise ConfigurationError("email: no recipients (RUNBOOK_EMAIL_TO)")
    message = compose(sender[0], [r[0] for r in recipients], subject, body)
    addresses = [r[1] for r in recipients]
    return await retry_unless_sent(
        lambda: _send_once(email, message, sender[1], addresses), attempts=2
    )
