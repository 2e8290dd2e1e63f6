"""memories (per-user long-term memory) with keyword search; running history summary

Revision ID: 0005_memory
Revises: 0004_tools
Create Date: 2026-11-21

Keyword search is dialect-specific and lives beside the table:
- SQLite: an FTS5 table ``memories_fts`` (rowid = memories.id) kept in step by
  triggers. Its ``owner`` column holds ``u<user_id>`` so a query can intersect
  with one user's rows inside the full-text index instead of filtering after.
  A later migration that rebuilds ``memories`` with batch mode drops the
  triggers and must recreate them.
- PostgreSQL: a GIN index over ``to_tsvector('simple', ...)`` of the text.
Both fold ё into е, since Russian writes either.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0005_memory"
down_revision = "0004_tools"
branch_labels = None
depends_on = None

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "text, owner, tokenize = 'unicode61 remove_diacritics 2', prefix = '3 4 5')",
    "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, text, owner) "
    "VALUES (new.id, replace(replace(new.text, 'ё', 'е'), 'Ё', 'Е'), 'u' || new.user_id); END",
    "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    "DELETE FROM memories_fts WHERE rowid = old.id; END",
    "CREATE TRIGGER memories_fts_update AFTER UPDATE OF text, user_id ON memories BEGIN "
    "UPDATE memories_fts SET text = replace(replace(new.text, 'ё', 'е'), 'Ё', 'Е'), "
    "owner = 'u' || new.user_id WHERE rowid = old.id; END",
)
POSTGRES_FTS = (
    "CREATE INDEX ix_memories_text_tsv ON memories USING gin "
    "(to_tsvector('simple'::regconfig, translate(text, 'ёЁ', 'еЕ')))"
)


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("importance", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column(
            "source_message_id", sa.BigInteger(), sa.ForeignKey("messages.id", ondelete="SET NULL")
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("embedding", sa.LargeBinary()),
        sa.Column("embedding_model", sa.String(256)),
    )
    op.create_index("ix_memories_user_id_id", "memories", ["user_id", "id"])
    op.create_index("ix_memories_user_id_embedding_model", "memories", ["user_id", "embedding_model"])
    op.create_index("ix_memories_user_id_updated_at", "memories", ["user_id", "updated_at"])
    op.create_index("ix_memories_expires_at", "memories", ["expires_at"])
    op.add_column("conversations", sa.Column("summary_until_id", sa.BigInteger()))

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(POSTGRES_FTS)


def downgrade() -> None:
    # The table first: its triggers name memories_fts, and SQLite checks every
    # trigger when batch mode renames a table below.
    op.drop_table("memories")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS memories_fts")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("summary_until_id")
