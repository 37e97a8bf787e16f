"""A block's repr, str, JSON dump and log lines never show its secret."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from blocks import (
    AppDatabase,
    AppRedis,
    LangSmith,
    LlmProbe,
    PagerDuty,
    Railway,
    Rds,
    Slack,
)

pytestmark = pytest.mark.unit

SECRET = "sk-test-Zq8vT3cret-9931"

BLOCKS = [
    AppDatabase(url=SecretStr(f"postgresql://app:{SECRET}@db:5432/app")),
    AppRedis(url=SecretStr(f"redis://:{SECRET}@cache:6379/0")),
    Railway(token=SecretStr(SECRET), project_id="p", environment_id="e", service_id="s"),
    Rds(aws_access_key_id=SecretStr("AKIAEXAMPLE"), aws_secret_access_key=SecretStr(SECRET)),
    LangSmith(api_key=SecretStr(SECRET)),
    LlmProbe(api_key=SecretStr(SECRET)),
    Slack(webhook_url=SecretStr(f"https://hooks.slack.com/services/{SECRET}")),
    PagerDuty(routing_key=SecretStr(SECRET)),
]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: type(b).__name__)
def test_block_repr_str_and_dump_hide_the_secret(block: object) -> None:
    assert SECRET not in repr(block)
    assert SECRET not in str(block)
    assert SECRET not in block.model_dump_json()  # type: ignore[attr-defined]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: type(b).__name__)
def test_logging_a_block_hides_the_secret(block: object, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("runbook.test")
    with caplog.at_level(logging.INFO, logger="runbook.test"):
        logger.info("configured %s", block)
        logger.info("configured %r", block)
    assert caplog.records, "the log call was captured"
    assert SECRET not in caplog.text


def test_secret_is_still_usable_by_the_client() -> None:
    railway = Railway(token=SecretStr(SECRET))
    assert railway.auth_headers() == {"Authorization": f"Bearer {SECRET}"}
    project = Railway(token=SecretStr(SECRET), token_kind="project")
    assert project.auth_headers() == {"Project-Access-Token": SECRET}
