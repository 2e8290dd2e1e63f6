"""tool rounds of running turns, so a turn finished after a crash does not
run its tools twice; an index of the turns not ended; how far memory extraction has read each user's
messages, so a crash does not lose what it had not read yet

Revision ID: 0009_tool_rounds
Revises: 0008_identities
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0009_tool_rounds"
down_revision = "0008_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_rounds",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_tool_rounds_request_id", "tool_rounds", ["request_id"])
    op.create_index("ix_tool_rounds_user_id", "tool_rounds", ["user_id"])
    unfinished = sa.text("status IN ('pending', 'recovering')")
    op.create_index(
        "ix_messages_unfinished", "messages", ["id"], sqlite_where=unfinished, postgresql_where=unfinished
    )
    op.add_column("users", sa.Column("memory_extracted_until", sa.BigInteger()))
    # What was said before this revision counts as read: no burst of
    # extractions at the first start after the upgrade.
    op.execute(
        "UPDATE users SET memory_extracted_until = "
        "(SELECT MAX(messages.id) FROM messages WHERE messages.user_id = users.id)"
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unfinished", table_name="messages")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("memory_extracted_until")
    op.drop_table("tool_rounds")
