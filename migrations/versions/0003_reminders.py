"""reminders

Revision ID: 0003_reminders
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0003_reminders"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reminders",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_fire_at", UTCDateTime()),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fire_count", sa.Integer(), nullable=False),
        sa.Column("last_fired_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_reminders_status_next_fire_at", "reminders", ["status", "next_fire_at"])
    op.create_index("ix_reminders_user_id_status", "reminders", ["user_id", "status"])
    op.create_index("ix_reminders_chat_id_status", "reminders", ["chat_id", "status"])


def downgrade() -> None:
    op.drop_table("reminders")
