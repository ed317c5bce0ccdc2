"""registration invites (LTI Dynamic Registration)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registration_invites",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("created_at", app.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", app.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("platform_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["platform_id"],
            ["platforms.id"],
            name=op.f("fk_registration_invites_platform_id_platforms"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_invites")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_registration_invites_token_sha256")),
    )


def downgrade() -> None:
    op.drop_table("registration_invites")
