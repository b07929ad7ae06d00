"""Evaluation runs and their items (``python app.py eval ...``).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("runtime", sa.String(50), nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("corpus_sha", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
    )
    op.create_index("ix_eval_runs_kind", "eval_runs", ["kind"])
    op.create_table(
        "eval_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("run_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("eval_items")
    op.drop_index("ix_eval_runs_kind", table_name="eval_runs")
    op.drop_table("eval_runs")
