"""Accounts and access: passwords and admins on users, sessions shared as reader or editor, personal API
tokens (hashed), and who asked each turn.

Revision ID: 0003_accounts
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_accounts"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild: SQLite would drop and copy ``users``, which sessions point at).
    op.add_column("users", sa.Column("password_hash", sa.String(200), nullable=True))  # argon2id; NULL: no login
    op.add_column("users", sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
    if op.get_bind().dialect.name == "sqlite":  # SQLite adds a column with a reference only in plain SQL
        op.execute("ALTER TABLE turns ADD COLUMN user_id INTEGER REFERENCES users (id) ON DELETE SET NULL")
    else:
        op.add_column("turns", sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"),
                                         nullable=True))
    op.create_table(
        "shares",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.UniqueConstraint("session_id", "user_id"),
    )
    op.create_index("ix_shares_user_id", "shares", ["user_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the token
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime, nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_shares_user_id", table_name="shares")
    op.drop_table("shares")
    with op.batch_alter_table("turns") as turns:
        turns.drop_column("user_id")
    with op.batch_alter_table("users") as users:
        users.drop_column("is_admin")
        users.drop_column("password_hash")
