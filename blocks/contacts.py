"""Who to reach, and where alerts go: the runbook's "Contacts" and "Alert Channels" tables.

    | Role             | Contact              | When to Reach      |
    | On-call Engineer | PagerDuty            | P1/P2 incidents    |
    | Engineering Lead | [email/phone]        | Escalation         |
    | OpenAI Support   | support@openai.com   | LLM issues         |
    | Railway Support  | Railway Discord      | Infrastructure     |
    | Security         | security@example.com | Security incidents |

    Alert channels: Slack #support-agent-alerts, PagerDuty on-call rotation, email ops@example.com.

No secrets here: addresses say where a human is reached, not how to authenticate (the Slack
webhook and the PagerDuty routing key live in their own blocks). The engineering lead has no
address until someone fills it in (`address` is None: `reachable` says so).
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from blocks.base import RunbookBlock
from runbook.settings import Settings

ChannelKind = Literal["pagerduty", "email", "url", "phone", "slack"]
Role = Literal["on-call", "engineering-lead", "openai-support", "railway-support", "security"]
ROLES: tuple[Role, ...] = (
    "on-call",
    "engineering-lead",
    "openai-support",
    "railway-support",
    "security",
)
# how people write a role (the runbook's table says "On-call Engineer", "OpenAI Support" …)
_ALIASES: dict[str, Role] = {
    "on-call-engineer": "on-call",
    "oncall": "on-call",
    "lead": "engineering-lead",
    "openai": "openai-support",
    "railway": "railway-support",
}


class Contact(BaseModel):
    """One row of the runbook's "Contacts" table."""

    model_config = ConfigDict(frozen=True)

    role: Role
    name: str = Field(description="as the runbook says it, e.g. 'On-call Engineer'")
    channel: ChannelKind
    address: str | None = Field(
        None,
        description="where: email address, URL, phone number, Slack channel, PagerDuty rotation",
    )
    when: str = Field("", description="when to reach them, e.g. 'P1/P2 incidents'")

    @property
    def reachable(self) -> bool:
        return bool(self.address)


class AlertChannel(BaseModel):
    """One of the runbook's "Alert Channels": where alerts are sent."""

    model_config = ConfigDict(frozen=True)

    kind: ChannelKind
    address: str
    purpose: str = ""


def default_contacts() -> list[Contact]:
    return [
        Contact(
            role="on-call",
            name="On-call Engineer",
            channel="pagerduty",
            address="on-call rotation",
            when="P1/P2 incidents",
        ),
        Contact(
            role="engineering-lead", name="Engineering Lead", channel="email", when="Escalation"
        ),
        Contact(
            role="openai-support",
            name="OpenAI Support",
            channel="email",
            address="support@openai.com",
            when="LLM issues",
        ),
        Contact(
            role="railway-support",
            name="Railway Support",
            channel="url",
            address="https://discord.gg/railway",
            when="Infrastructure",
        ),
        Contact(
            role="security",
            name="Security",
            channel="email",
            address="security@example.com",
            when="Security incidents",
        ),
    ]


def default_alert_channels(email_to: str = "ops@example.com") -> list[AlertChannel]:
    return [
        AlertChannel(kind="slack", address="#support-agent-alerts", purpose="every alert"),
        AlertChannel(kind="pagerduty", address="on-call rotation", purpose="P1/P2: wake someone"),
        AlertChannel(kind="email", address=email_to, purpose="the ops mailbox"),
    ]


def normalise_role(role: str) -> str:
    """'On-call Engineer', 'on_call', 'OpenAI Support' → the role's key."""
    key = re.sub(r"[\s_]+", "-", role.strip().lower())
    return _ALIASES.get(key, key)


class Contacts(RunbookBlock):
    """The people and channels of the runbook: who to reach for what, where alerts go."""

    _block_type_name = "Runbook Contacts"
    _block_type_slug = "runbook-contacts"

    contacts: list[Contact] = Field(default_factory=default_contacts)
    alert_channels: list[AlertChannel] = Field(default_factory=default_alert_channels)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            contacts=default_contacts(),
            alert_channels=default_alert_channels(settings.email_to),
        )

    def contact_for(self, role: str) -> Contact:
        """The contact for `role` (a key such as 'railway-support', or the runbook's wording).

        Raises `KeyError` naming the known roles when there is none."""
        key = normalise_role(role)
        for contact in self.contacts:
            if contact.role == key:
                return contact
        known = ", ".join(c.role for c in self.contacts)
        raise KeyError(f"no contact for role {role!r} (known: {known})")

    def channel(self, kind: ChannelKind) -> AlertChannel | None:
        """The alert channel of `kind` (slack, pagerduty, email), if there is one."""
        return next((c for c in self.alert_channels if c.kind == kind), None)
