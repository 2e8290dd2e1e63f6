"""evaluation runs and their task results (bot/eval/)

Revision ID: 0011_eval
Revises: 0010_memory_stems
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.models import BigIntPK, UTCDateTime

revision = "0011_eval"
down_revision = "0010_memory_stems"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("variants", sa.Text(), nullable=False),
        sa.Column("tasks_total", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
    )
    op.create_index("ix_eval_runs_started_at", "eval_runs", ["started_at"])
    op.create_table(
        "eval_results",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("variant", sa.String(1), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=False),
        sa.Column("error", sa.String(500)),
        sa.Column("first_token_ms", sa.Integer()),
        sa.Column("total_ms", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float()),
        sa.Column("tool_calls", sa.Integer(), nullable=False),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("fallbacks", sa.Integer(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_eval_results_run_variant", "eval_results", ["run_id", "variant"])


def downgrade() -> None:
    op.drop_index("ix_eval_results_run_variant", table_name="eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_started_at", table_name="eval_runs")
    op.drop_table("eval_runs")
