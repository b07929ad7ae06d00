"""Initial schema: users, sessions, documents, segments (with FTS5; on PostgreSQL a tsvector column with a GIN
index), turns, citations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("user_id", "name"),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("blob_sha", sa.String(64), nullable=True),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "session_documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("display_name", sa.String(500), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("session_id", "document_id"),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("locator", sa.JSON, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("image_sha", sa.String(64), nullable=True),
        sa.Column("meta", sa.JSON, nullable=False),
    )
    op.create_index("ix_segments_document_id", "segments", ["document_id"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("runtime", sa.String(50), nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("ttft_s", sa.Float, nullable=False),
        sa.Column("total_s", sa.Float, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_turns_session_id", "turns", ["session_id"])
    op.create_table(
        "citations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ref", sa.String(20), nullable=False),
        sa.Column("segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="SET NULL"), nullable=True),
        sa.Column("document_name", sa.String(500), nullable=False),
        sa.Column("locator", sa.JSON, nullable=False),
        sa.Column("quote", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
    )
    op.create_index("ix_citations_turn_id", "citations", ["turn_id"])
    op.create_table(
        "app_state",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Full-text index: a tsvector of each segment's text (english stemming, like FTS5's porter), GIN-indexed.
        op.execute("ALTER TABLE segments ADD COLUMN tsv tsvector "
                   "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
        op.execute("CREATE INDEX ix_segments_tsv ON segments USING GIN (tsv)")
        return
    # Full-text index over segment text (external content, kept in sync by triggers).
    op.execute(
        "CREATE VIRTUAL TABLE segments_fts USING fts5("
        "text, content='segments', content_rowid='id', tokenize='porter unicode61')"
    )
    op.execute(
        "CREATE TRIGGER segments_ai AFTER INSERT ON segments BEGIN "
        "INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(
        "CREATE TRIGGER segments_ad AFTER DELETE ON segments BEGIN "
        "INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS segments_ad")
        op.execute("DROP TRIGGER IF EXISTS segments_ai")
        op.execute("DROP TABLE IF EXISTS segments_fts")
    for table in ("app_state", "citations", "turns", "segments", "session_documents", "documents", "sessions", "users"):
        op.drop_table(table)
