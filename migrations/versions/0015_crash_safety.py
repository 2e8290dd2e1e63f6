"""crash safety: idempotency keys of tool side effects, the raw update kept
until handled (the single process's inbox), and the preview messages a
turn's answer already shows

Revision ID: 0015_crash_safety
Revises: 0014_telegram_updates
Create Date: 2026-12-05

- reminders.idempotency_key, memories.idempotency_key: the turn and the tool
  call that made the row; unique, so a tool re-run after a crash finds its
  first row instead of adding a second. NULL for rows made otherwise (a
  command, extraction), and for every existing row.
- telegram_updates.payload: the update as Telegram sent it, written before
  the next long poll confirms it, so an update whose turn was never stored
  is handled at the next start. Cleared once the update is done.
- messages.preview_message_ids: the Telegram messages (JSON list of ids) a
  group's live preview of the answer to this user message occupies; a turn
  finished after a crash edits them instead of leaving a partial answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_crash_safety"
down_revision = "0014_telegram_updates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: neither database rewrites the table.
    op.add_column("reminders", sa.Column("idempotency_key", sa.String(64), nullable=True))
    op.create_index("ux_reminders_idempotency_key", "reminders", ["idempotency_key"], unique=True)
    op.add_column("memories", sa.Column("idempotency_key", sa.String(64), nullable=True))
    op.create_index("ux_memories_idempotency_key", "memories", ["idempotency_key"], unique=True)
    op.add_column("telegram_updates", sa.Column("payload", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("preview_message_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    # Native drops (SQLite 3.35+): a batch copy of reminders, memories or
    # messages would rebuild tables other tables' rows cascade from.
    op.drop_column("messages", "preview_message_ids")
    op.drop_column("telegram_updates", "payload")
    op.drop_index("ux_memories_idempotency_key", table_name="memories")
    op.drop_column("memories", "idempotency_key")
    op.drop_index("ux_reminders_idempotency_key", table_name="reminders")
    op.drop_column("reminders", "idempotency_key")
