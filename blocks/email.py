"""Email over SMTP (runbook "Alert Channels": Email ops@example.com)."""

from __future__ import annotations

import socket
import ssl
from typing import Self

import aiosmtplib
from pydantic import Field, SecretStr, field_validator

from blocks.base import RunbookBlock
from runbook.errors import ConfigurationError
from runbook.settings import Settings


def split_addresses(value: str | list[str]) -> list[str]:
    """`a@x, b@y` (or a list) → ["a@x", "b@y"], blanks dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item and item.strip()]


class Email(RunbookBlock):
    """An SMTP submission server, its login, and who gets the runbook's mail.

    `tls` is implicit TLS (port 465) and wins over `starttls` (port 587); with neither, mail
    goes in clear text (a local relay only). `ca_file` trusts a private CA instead of the
    system's."""

    _block_type_name = "Runbook Email"
    _block_type_slug = "runbook-email"

    host: str | None = Field(None, description="SMTP server; unset: email is not configured")
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS")
    tls: bool = Field(False, description="implicit TLS (port 465) instead of STARTTLS")
    ca_file: str | None = Field(None, description="CA bundle to trust (a private CA)")
    timeout_s: float = Field(10.0, gt=0, le=300)
    from_address: str = "runbook@example.com"
    to: list[str] = Field(default_factory=lambda: ["ops@example.com"])

    @field_validator("to", mode="before")
    @classmethod
    def _split(cls, value: str | list[str]) -> list[str]:
        return split_addresses(value)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            host=settings.smtp_host or None,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            tls=settings.smtp_tls,
            ca_file=settings.smtp_ca_file or None,
            timeout_s=settings.smtp_timeout_s,
            from_address=settings.email_from,
            to=split_addresses(settings.email_to),
        )

    @property
    def configured(self) -> bool:
        return bool(self.host)

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name verified; against `ca_file` when set."""
        try:
            return ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            raise ConfigurationError(
                f"smtp: CA file {self.ca_file!r} unusable ({reason})"
            ) from None

    def get_client(self) -> aiosmtplib.SMTP:
        """An unconnected client: `connect()` opens, upgrades (STARTTLS) and logs in."""
        if not self.host:
            raise ConfigurationError("smtp: no server configured (RUNBOOK_SMTP_HOST)")
        password = self.password.get_secret_value() if self.password else ""
        if self.username and not password:
            raise ConfigurationError("smtp: a username is configured without a password")
        encrypted = self.tls or self.starttls
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=password if self.username else None,
            use_tls=self.tls,
            start_tls=self.starttls and not self.tls,
            tls_context=self.tls_context() if encrypted else None,
            timeout=self.timeout_s,
            # the default asks DNS for our own name (socket.getfqdn): not while DNS is down
            local_hostname=socket.gethostname() or "localhost",
        )
