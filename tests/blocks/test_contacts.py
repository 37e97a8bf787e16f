"""The Contacts block says what the runbook's "Contacts" and "Alert Channels" tables say."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks import ALL_BLOCKS, Contacts
from blocks.contacts import ROLES, Contact
from runbook.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def contacts() -> Contacts:
    return Contacts.from_settings(Settings(email_to="ops@example.com"))


@pytest.mark.parametrize(
    ("role", "channel", "address", "when"),
    [
        ("on-call", "pagerduty", "on-call rotation", "P1/P2 incidents"),
        ("engineering-lead", "email", None, "Escalation"),
        ("openai-support", "email", "support@openai.com", "LLM issues"),
        ("railway-support", "url", "https://discord.gg/railway", "Infrastructure"),
        ("security", "email", "security@example.com", "Security incidents"),
    ],
)
def test_each_runbook_contact_has_its_channel_address_and_when(
    contacts: Contacts, role: str, channel: str, address: str | None, when: str
) -> None:
    found = contacts.contact_for(role)
    assert (found.role, found.channel, found.address, found.when) == (role, channel, address, when)


def test_every_role_has_exactly_one_contact(contacts: Contacts) -> None:
    assert sorted(c.role for c in contacts.contacts) == sorted(ROLES)


@pytest.mark.parametrize(
    ("wording", "role"),
    [
        ("On-call Engineer", "on-call"),
        ("on_call", "on-call"),
        ("Engineering Lead", "engineering-lead"),
        ("OpenAI Support", "openai-support"),
        ("Railway Support", "railway-support"),
        ("  SECURITY ", "security"),
    ],
)
def test_contact_for_accepts_the_runbooks_wording(
    contacts: Contacts, wording: str, role: str
) -> None:
    assert contacts.contact_for(wording).role == role


def test_contact_for_an_unknown_role_names_the_known_ones(contacts: Contacts) -> None:
    with pytest.raises(KeyError, match="known: on-call, engineering-lead"):
        contacts.contact_for("legal")


def test_the_engineering_lead_is_not_reachable_until_someone_fills_in_an_address(
    contacts: Contacts,
) -> None:
    assert not contacts.contact_for("engineering-lead").reachable
    assert contacts.contact_for("security").reachable


def test_alert_channels_are_slack_pagerduty_and_the_configured_ops_mailbox() -> None:
    block = Contacts.from_settings(Settings(email_to="oncall@corp.test"))
    assert [(c.kind, c.address) for c in block.alert_channels] == [
        ("slack", "#support-agent-alerts"),
        ("pagerduty", "on-call rotation"),
        ("email", "oncall@corp.test"),
    ]
    email = block.channel("email")
    assert email is not None and email.address == "oncall@corp.test"
    assert block.channel("phone") is None


def test_contacts_survive_a_json_round_trip_unchanged(contacts: Contacts) -> None:
    again = Contacts.model_validate_json(contacts.model_dump_json())
    assert again.contacts == contacts.contacts
    assert again.alert_channels == contacts.alert_channels


def test_a_contact_is_frozen_and_its_channel_kind_is_checked() -> None:
    contact = Contact(role="security", name="Security", channel="email", address="s@x.test")
    with pytest.raises(ValidationError):
        contact.address = "other@x.test"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Contact(role="security", name="Security", channel="carrier-pigeon")  # type: ignore[arg-type]


def test_contacts_is_registered_and_configured_with_the_other_blocks() -> None:
    assert Contacts in ALL_BLOCKS
    assert Contacts.get_block_type_slug() == "runbook-contacts"
