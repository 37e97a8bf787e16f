"""`send_email` against the sandbox's real mail server: STARTTLS (verified against the sandbox's
CA) and AUTH, the message as the ops mailbox receives it, and every failure on the error tree
without the password anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest
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
from runbook.settings import Settings, get_settings
from sandbox.environment import SECRETS
from sandbox.handle import SandboxHandle
from tasks.email import EmailDelivery, send_email
from tests.tasks.netfakes import closed_port, silent_listener

PASSWORD = SECRETS["smtp_password"]
WRONG = "wrong-pw-Hq73kZ0p"


@pytest.fixture
def sandbox(platform_env: SandboxHandle) -> Iterator[SandboxHandle]:
    """The session's sandbox, env applied; faults cleared again for whoever comes next."""
    yield platform_env
    platform_env.clear()


@pytest.fixture
def block(sandbox: SandboxHandle) -> Email:
    return Email.from_settings(get_settings())


async def send(block: Email, subject: str, body: str, to: list[str] | None = None) -> EmailDelivery:
    delivery: EmailDelivery = await send_email.fn(block, subject, body, to)
    return delivery


def assert_no_credentials(error: BaseException, *values: str) -> None:
    text = f"{error!s} {error!r}"
    for value in (PASSWORD, WRONG, "runbook-sbx", *values):
        assert value not in text
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.integration
async def test_email_reaches_the_ops_mailbox_over_starttls_with_auth(
    sandbox: SandboxHandle, block: Email
) -> None:
    before = len(sandbox.sink("email"))
    body = "Rolled back api to dep-0002.\nError rate 14% -> 0.4%.\n"
    delivery = await send(block, "[runbook] api rolled back", body)
    assert (delivery.channel, delivery.accepted, delivery.recipients) == (
        "email",
        True,
        ("ops@example.com",),
    )
    sink = sandbox.sink("email")
    assert len(sink) == before + 1
    mail = sink[-1]
    assert mail["subject"] == "[runbook] api rolled back"
    assert mail["body"] == body
    assert (mail["from"], mail["to"], mail["mail_from"]) == (
        "runbook@example.com",
        ["ops@example.com"],
        "runbook@example.com",
    )
    assert mail["tls"] is True and mail["auth_user"] == "runbook-sbx"
    assert mail["headers"]["Message-ID"] == delivery.message_id
    assert PASSWORD not in json.dumps(sink)


@pytest.mark.integration
async def test_recipients_can_be_overridden_and_a_subject_cannot_inject_headers(
    sandbox: SandboxHandle, block: Email
) -> None:
    await send(block, "outage\r\nBcc: thief@evil.test", "x", to=["Security <security@example.com>"])
    mail = sandbox.sink("email")[-1]
    assert mail["to"] == ["security@example.com"]
    assert mail["headers"]["To"] == "Security <security@example.com>"
    assert mail["subject"] == "outage Bcc: thief@evil.test"
    assert "Bcc" not in mail["headers"]


@pytest.mark.integration
async def test_wrong_password_is_not_authorized_and_no_password_is_ever_shown(
    sandbox: SandboxHandle, block: Email, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(sandbox.sink("email"))
    wrong = block.model_copy(update={"password": SecretStr(WRONG)})
    with caplog.at_level(logging.DEBUG), pytest.raises(NotAuthorized, match="535") as refused:
        await send(wrong, "x", "y")
    assert_no_credentials(refused.value)
    assert WRONG not in caplog.text and PASSWORD not in caplog.text
    sink = sandbox.sink("email")
    assert len(sink) == before
    assert PASSWORD not in json.dumps(sink) and WRONG not in json.dumps(sink)


@pytest.mark.integration
async def test_smtp_down_is_transient_and_delivers_nothing_until_cleared(
    sandbox: SandboxHandle, block: Email
) -> None:
    before = len(sandbox.sink("email"))
    sandbox.inject("smtp-down")
    with pytest.raises(TransientError, match="421") as down:
        await send(block, "x", "y")
    assert not isinstance(down.value, OutcomeUnknown)  # nothing was sent: safe to try again
    assert_no_credentials(down.value)
    assert len(sandbox.sink("email")) == before
    sandbox.clear("smtp-down")
    assert (await send(block, "after", "y")).accepted
    assert sandbox.sink("email")[-1]["subject"] == "after"


@pytest.mark.integration
async def test_unreachable_or_silent_server_is_transient(block: Email) -> None:
    with pytest.raises(TransientError, match="connection refused") as refused:
        await send(block.model_copy(update={"port": closed_port()}), "x", "y")
    assert_no_credentials(refused.value, "127.0.0.1")
    with silent_listener() as port:
        silent = block.model_copy(update={"port": port, "timeout_s": 0.3})
        with pytest.raises(TransientError, match="timed out") as hung:
            await send(silent, "x", "y")
    assert not isinstance(hung.value, OutcomeUnknown)


@pytest.mark.integration
async def test_untrusted_certificate_is_a_permanent_error(
    sandbox: SandboxHandle, block: Email
) -> None:
    before = len(sandbox.sink("email"))
    with pytest.raises(PermanentError, match="certificate is not trusted") as untrusted:
        await send(block.model_copy(update={"ca_file": None}), "x", "y")  # system CAs only
    assert_no_credentials(untrusted.value)
    assert len(sandbox.sink("email")) == before


@pytest.mark.integration
async def test_without_starttls_the_password_is_not_sent_in_clear(
    sandbox: SandboxHandle, block: Email
) -> None:
    before = len(sandbox.sink("email"))
    clear_text = block.model_copy(update={"starttls": False})
    with pytest.raises(PermanentError) as refused:
        await send(clear_text, "x", "y")
    assert not isinstance(refused.value, TransientError)
    assert_no_credentials(refused.value)
    assert len(sandbox.sink("email")) == before


@pytest.mark.unit
@pytest.mark.parametrize(
    ("update", "to", "error"),
    [
        ({"host": None}, None, ConfigurationError),
        ({"password": None}, None, ConfigurationError),  # a username without a password
        ({"to": []}, None, ConfigurationError),
        ({"from_address": "runbook"}, None, ConfigurationError),
        ({"ca_file": "/nonexistent/ca.pem"}, None, ConfigurationError),
        ({}, ["ops@example.com\r\nBcc: x@evil.test"], PermanentError),
        ({}, ["not-an-address"], PermanentError),
    ],
)
async def test_misconfiguration_and_bad_addresses_fail_before_connecting(
    update: dict[str, object], to: list[str] | None, error: type[RunbookError]
) -> None:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": closed_port(),
        "username": "runbook-sbx",
        "password": SecretStr(PASSWORD),
    }
    block = Email(**(fields | update))
    with pytest.raises(error) as failed:
        await send(block, "x", "y", to)
    assert not isinstance(failed.value, TransientError)  # it never got as far as the network
    assert PASSWORD not in str(failed.value)


@pytest.mark.unit
def test_email_block_from_settings_hides_its_password() -> None:
    settings = Settings(
        smtp_host="smtp.example.com",
        smtp_port=465,
        smtp_username="ops-bot",
        smtp_password=SecretStr(PASSWORD),
        smtp_tls=True,
        email_to="ops@example.com, oncall@example.com",
    )
    block = Email.from_settings(settings)
    assert block.to == ["ops@example.com", "oncall@example.com"]
    assert (block.port, block.tls, block.configured) == (465, True, True)
    for text in (repr(block), str(block), block.model_dump_json()):
        assert PASSWORD not in text
    client = block.get_client()
    assert (client.use_tls, client.hostname, client.port) == (True, "smtp.example.com", 465)


@pytest.mark.integration
def test_email_block_round_trips_through_blocks_configure_from_env(
    prefect_server: str, sandbox: SandboxHandle
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": f"{prefect_server}/api",
        "RUNBOOK_ENVIRONMENT": "mailrt",
    }
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "blocks", "configure", "--from-env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runbook-email/mailrt" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    loaded = cast(Email, asyncio.run(Email.aload("mailrt")))
    assert loaded.password is not None and loaded.password.get_secret_value() == PASSWORD
    assert (loaded.host, loaded.port, loaded.ca_file, loaded.to) == (
        "127.0.0.1",
        int(sandbox.env["RUNBOOK_SMTP_PORT"]),
        sandbox.env["RUNBOOK_SMTP_CA_FILE"],
        ["ops@example.com"],
    )
