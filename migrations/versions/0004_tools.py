"""tool_events: every tool call, its duration and outcome (for /stats)

Revision ID: 0004_tools
Revises: 0003_reminders
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0004_tools"
down_revision = "0003_reminders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(32)),
        sa.Column("detail", sa.String(300)),
    )
    op.create_index("ix_tool_events_created_at", "tool_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_tool_events_created_at", table_name="tool_events")
    op.drop_table("tool_events")
