"""used id_tokens: one launch id_token binds one Formative student

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.store.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_id_tokens",
        sa.Column("token_key", sa.String(length=64), nullable=False),
        sa.Column("student_id", sa.String(length=255), nullable=False),
        sa.Column("expires_at", app.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", app.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_key", name=op.f("pk_used_id_tokens")),
    )
    op.create_index(
        op.f("ix_used_id_tokens_expires_at"), "used_id_tokens", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_used_id_tokens_expires_at"), table_name="used_id_tokens")
    op.drop_table("used_id_tokens")
