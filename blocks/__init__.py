"""One Prefect Block per external system: settings, `SecretStr` credentials and `get_client()`.

Blocks are loaded by name (the environment, `RUNBOOK_ENVIRONMENT`, default "default"); where no
block document exists, or no Prefect API is configured, they are built from `RUNBOOK_*` settings.
"""

from blocks.app_database import AppDatabase
from blocks.app_redis import AppRedis
from blocks.base import RunbookBlock
from blocks.contacts import Contacts
from blocks.dns import Dns
from blocks.email import Email
from blocks.langsmith import LangSmith
from blocks.llm import LlmProbe
from blocks.openai_admin import OpenAiAdmin
from blocks.pagerduty import PagerDuty
from blocks.policy import Policy
from blocks.railway import Railway
from blocks.rds import Rds
from blocks.slack import Slack
from blocks.status_pages import StatusPages
from blocks.statuspage import CustomerStatusPage
from blocks.support_api import SupportApi

ALL_BLOCKS: tuple[type[RunbookBlock], ...] = (
    SupportApi,
    AppDatabase,
    AppRedis,
    Railway,
    Rds,
    LangSmith,
    StatusPages,
    LlmProbe,
    Slack,
    PagerDuty,
    Email,
    Dns,
    Policy,
    CustomerStatusPage,
    Contacts,
    OpenAiAdmin,
)

__all__ = [
    "ALL_BLOCKS",
    "AppDatabase",
    "AppRedis",
    "Contacts",
    "CustomerStatusPage",
    "Dns",
    "Email",
    "LangSmith",
    "LlmProbe",
    "OpenAiAdmin",
    "PagerDuty",
    "Policy",
    "Railway",
    "Rds",
    "RunbookBlock",
    "Slack",
    "StatusPages",
    "SupportApi",
]

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's blocks
