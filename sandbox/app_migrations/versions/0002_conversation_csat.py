"""conversations.csat_score: the customer's satisfaction score, when they gave one

Revision ID: 0002_conversation_csat
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_conversation_csat"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("csat_score", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("conversations", "csat_score")
