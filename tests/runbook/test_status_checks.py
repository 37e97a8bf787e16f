"""Statuses are closed sets: the database's CHECK constraints hold exactly the enums' values,
so a typo in a status is refused by Postgres instead of becoming an act nobody recognises."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from runbook import opsdb
from runbook.actions import ActionClass
from runbook.approvals import ApprovalStatus, WaitMode
from runbook.ledger import LedgerStatus

SQL = (opsdb.MIGRATIONS / "004_status_checks.sql").read_text()


def check_values(constraint: str) -> set[str]:
    found = re.search(rf"ADD CONSTRAINT {constraint} CHECK \(\w+ IN \((.*?)\)\);", SQL, re.S)
    assert found, constraint
    return set(re.findall(r"'(\w+)'", found.group(1)))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("constraint", "enum"),
    [
        ("actions_status_check", LedgerStatus),
        ("actions_action_class_check", ActionClass),
        ("approvals_status_check", ApprovalStatus),
        ("approvals_mode_check", WaitMode),
    ],
)
def test_each_check_constraint_lists_exactly_the_enum(constraint: str, enum: type) -> None:
    assert check_values(constraint) == {m.value for m in enum}  # type: ignore[attr-defined]


@pytest.mark.integration
async def test_the_database_refuses_an_unknown_ledger_status(pg_url: str) -> None:
    async with await opsdb.connect(pg_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(
                "INSERT INTO runbook.actions (idempotency_key, incident_id, action, target,"
                " action_class, status) VALUES (%s, 'i', 'a', 't', 'safe', 'don')",
                (uuid.uuid4().hex,),
            )
