"""memory versions: users.memory_version, bumped with every change to the
user's memories, so each process knows when its cached FAISS index of the
user is stale (several workers over one database, the scaled mode)

Revision ID: 0013_memory_version
Revises: 0012_agents
Create Date: 2026-12-05

Existing users start at 0; index files saved before this revision carry no
version and are checked against the rows as before, once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_memory_version"
down_revision = "0012_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the
    # table, SQLite without copying it.
    op.add_column("users", sa.Column("memory_version", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    # Natively on SQLite too (3.35+, which RETURNING in the version's bump
    # needs anyway): a batch copy of users would drop the table the other
    # tables' rows cascade from.
    op.drop_column("users", "memory_version")
