"""administration: access and activity on users, usage per day, audit log,
invites, run-time settings, broadcasts and their deliveries

Revision ID: 0006_admin
Revises: 0005_memory
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0006_admin"
down_revision = "0005_memory"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN with a server default: SQLite needs no table rebuild.
    op.add_column("users", sa.Column("allowed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("users", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("users", sa.Column("token_budget", sa.Integer()))
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_daily_user_id_day", "usage_daily", ["user_id", "day"])
    op.create_table(
        "audit_log",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("admin_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(300), nullable=False),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_table(
        "invites",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("used_by", sa.BigInteger()),
        sa.Column("used_at", UTCDateTime()),
    )
    op.create_table(
        "runtime_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.BigInteger()),
    )
    op.create_table(
        "broadcasts",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("progress_chat_id", sa.BigInteger()),
        sa.Column("progress_message_id", sa.BigInteger()),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
    )
    op.create_table(
        "broadcast_deliveries",
        sa.Column(
            "broadcast_id",
            sa.BigInteger(),
            sa.ForeignKey("broadcasts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_broadcast_deliveries_broadcast_id_status", "broadcast_deliveries", ["broadcast_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_broadcast_deliveries_broadcast_id_status", table_name="broadcast_deliveries")
    op.drop_table("broadcast_deliveries")
    op.drop_table("broadcasts")
    op.drop_table("runtime_settings")
    op.drop_table("invites")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_usage_daily_user_id_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    # Native DROP COLUMN (SQLite >= 3.35): a batch rebuild would drop and
    # recreate users, and the drop would cascade into every table that
    # references it.
    for column in ("token_budget", "active", "allowed"):
        op.drop_column("users", column)
