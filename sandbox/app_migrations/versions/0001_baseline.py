"""baseline: the schema sandbox.appdb.prepare() creates

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

from alembic import op

from sandbox.appdb import SCHEMA

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(SCHEMA)  # CREATE … IF NOT EXISTS: a prepared database is left as it is


def downgrade() -> None:
    """The history starts here: nothing is dropped."""
