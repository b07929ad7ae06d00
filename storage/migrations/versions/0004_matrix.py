"""The review matrix: one cell per session, document and field, with the reviewer's mark.

Revision ID: 0004_matrix
Revises: 0003_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_matrix"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matrix_cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("field_name", sa.String(500), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("quote", sa.Text, nullable=False),
        sa.Column("segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="SET NULL"), nullable=True),
        sa.Column("locator", sa.JSON, nullable=False),
        sa.Column("read_tokens", sa.Integer, nullable=False),
        sa.Column("total_tokens", sa.Integer, nullable=False),
        sa.Column("mark", sa.String(20), nullable=False),
        sa.Column("edit", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("session_id", "document_id", "field_name"),
    )
    op.create_index("ix_matrix_cells_session_id", "matrix_cells", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_matrix_cells_session_id", table_name="matrix_cells")
    op.drop_table("matrix_cells")
