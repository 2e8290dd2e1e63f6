"""identities per channel, /link codes, the channel of chats and reminders

Every existing row stays valid: chats and reminders so far had Telegram
chat ids (the server default says so), and a Telegram user's identity is recorded
here for each user with a private Telegram chat (their Telegram id is their
user id); anyone else's is recorded at their next message.

Revision ID: 0008_identities
Revises: 0007_api_keys
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0008_identities"
down_revision = "0007_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN with a server default: SQLite needs no table rebuild.
    op.add_column("chats", sa.Column("channel", sa.String(16), nullable=False, server_default="telegram"))
    op.add_column("chats", sa.Column("external_id", sa.String(128)))
    op.add_column("reminders", sa.Column("channel", sa.String(16), nullable=False, server_default="telegram"))
    # Every chat so far has a Telegram-range id: console and API chats used
    # their user's id, which is also that user's private Telegram chat.
    op.execute("UPDATE chats SET external_id = CAST(id AS VARCHAR(128))")
    op.create_table(
        "identities",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("channel", "external_id", name="uq_identities_channel_external_id"),
    )
    op.create_index("ix_identities_user_id", "identities", ["user_id"])
    op.execute(
        "INSERT INTO identities (channel, external_id, user_id, created_at) "
        "SELECT 'telegram', CAST(users.id AS VARCHAR(128)), users.id, users.created_at FROM users "
        "WHERE EXISTS (SELECT 1 FROM chats WHERE chats.id = users.id AND chats.type = 'private')"
    )
    op.create_table(
        "link_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_link_codes_user_id", "link_codes", ["user_id"])


def downgrade() -> None:
    op.drop_table("link_codes")
    op.drop_table("identities")
    with op.batch_alter_table("reminders") as batch:
        batch.drop_column("channel")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("external_id")
        batch.drop_column("channel")
