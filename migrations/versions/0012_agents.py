"""agents: the turns each agent answered, orchestrators' plans, chats' pinned agents

Revision ID: 0012_agents
Revises: 0011_eval
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0012_agents"
down_revision = "0011_eval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_turns",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("agent", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("switched", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(128)),
    )
    op.create_index("ix_agent_turns_created_at", "agent_turns", ["created_at"])
    op.create_index("ix_agent_turns_user_id", "agent_turns", ["user_id"])
    op.create_table(
        "agent_plans",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_agent_plans_user_id", "agent_plans", ["user_id"])
    op.create_table(
        "chat_agents",
        sa.Column("chat_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("agent", sa.String(24), nullable=False),
        sa.Column("set_by", sa.BigInteger()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chat_agents")
    op.drop_index("ix_agent_plans_user_id", table_name="agent_plans")
    op.drop_table("agent_plans")
    op.drop_index("ix_agent_turns_user_id", table_name="agent_turns")
    op.drop_index("ix_agent_turns_created_at", table_name="agent_turns")
    op.drop_table("agent_turns")
