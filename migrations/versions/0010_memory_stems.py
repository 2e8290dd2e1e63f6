"""keyword search over Snowball stems: memories.search_terms, and the
full-text indexes rebuilt over it

Revision ID: 0010_memory_stems
Revises: 0009_tool_rounds
Create Date: 2026-12-05

Until now each dialect matched query-word prefixes against the raw text
("сестра" searched as ``сест*``), which misses inflections that change more
than the ending and matches unrelated words that share a prefix. Now each row
keeps the Snowball stems of its content words in ``search_terms``, computed
in Python (bot/memory/keyword.py) when the text is written, so SQLite and
PostgreSQL index the very same terms:
- SQLite: ``memories_fts`` is rebuilt over ``search_terms`` (its triggers
  copy that column now; ё is folded before stemming, in Python).
- PostgreSQL: the GIN index covers ``to_tsvector('simple', search_terms)``.
Existing rows are stemmed here, in batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.memory.keyword import index_terms

revision = "0010_memory_stems"
down_revision = "0009_tool_rounds"
branch_labels = None
depends_on = None

BATCH = 2_000

OLD_SQLITE_FTS = (
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
    "INSERT INTO memories_fts(rowid, text, owner) "
    "SELECT id, replace(replace(text, 'ё', 'е'), 'Ё', 'Е'), 'u' || user_id FROM memories",
)
# Stems are lower-case \w+ already: the tokenizer only splits on the spaces.
NEW_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "terms, owner, tokenize = 'unicode61 remove_diacritics 0')",
    "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, terms, owner) VALUES (new.id, new.search_terms, 'u' || new.user_id); END",
    "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    "DELETE FROM memories_fts WHERE rowid = old.id; END",
    "CREATE TRIGGER memories_fts_update AFTER UPDATE OF search_terms, user_id ON memories BEGIN "
    "UPDATE memories_fts SET terms = new.search_terms, owner = 'u' || new.user_id WHERE rowid = old.id; END",
    "INSERT INTO memories_fts(rowid, terms, owner) SELECT id, search_terms, 'u' || user_id FROM memories",
)
DROP_SQLITE_FTS = (
    "DROP TRIGGER IF EXISTS memories_fts_insert",
    "DROP TRIGGER IF EXISTS memories_fts_delete",
    "DROP TRIGGER IF EXISTS memories_fts_update",
    "DROP TABLE IF EXISTS memories_fts",
)
OLD_POSTGRES_INDEX = (
    "CREATE INDEX ix_memories_text_tsv ON memories USING gin "
    "(to_tsvector('simple'::regconfig, translate(text, 'ёЁ', 'еЕ')))"
)
NEW_POSTGRES_INDEX = (
    "CREATE INDEX ix_memories_terms_tsv ON memories USING gin (to_tsvector('simple'::regconfig, search_terms))"
)


def upgrade() -> None:
    op.add_column("memories", sa.Column("search_terms", sa.Text(), nullable=False, server_default=""))
    _stem_existing_rows()
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in (*DROP_SQLITE_FTS, *NEW_SQLITE_FTS):
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_memories_text_tsv")
        op.execute(NEW_POSTGRES_INDEX)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in DROP_SQLITE_FTS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_memories_terms_tsv")
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("search_terms")
    if dialect == "sqlite":
        for statement in OLD_SQLITE_FTS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(OLD_POSTGRES_INDEX)


def _stem_existing_rows() -> None:
    """Each row's stems, written in batches by id (no table-wide transaction
    of Python-side work held in memory at once)."""
    bind = op.get_bind()
    memories = sa.table("memories", sa.column("id", sa.BigInteger()), sa.column("text", sa.Text()),
                        sa.column("search_terms", sa.Text()))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(memories.c.id, memories.c.text).where(memories.c.id > last).order_by(memories.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            memories.update().where(memories.c.id == sa.bindparam("row_id")).values(search_terms=sa.bindparam("terms")),
            [{"row_id": row_id, "terms": index_terms(text)} for row_id, text in rows],
        )
        last = rows[-1][0]
