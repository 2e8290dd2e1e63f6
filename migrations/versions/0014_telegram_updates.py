"""the Telegram updates workers of the scaled mode took, so a redelivered update is not answered twice

Revision ID: 0014_telegram_updates
Revises: 0013_memory_version
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import UTCDateTime

revision = "0014_telegram_updates"
down_revision = "0013_memory_version"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_updates",
        sa.Column("update_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_telegram_updates_claimed_at", "telegram_updates", ["claimed_at"])
    # A redelivered update finds the turn its first delivery stored by request id.
    op.create_index("ix_messages_request_id", "messages", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_request_id", table_name="messages")
    op.drop_index("ix_telegram_updates_claimed_at", table_name="telegram_updates")
    op.drop_table("telegram_updates")
