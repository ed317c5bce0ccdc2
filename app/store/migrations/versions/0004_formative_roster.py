"""formative roster: classes and students named by PUT /v1/formatives/{id}

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "formative_classes",
        sa.Column("formative_id", sa.String(length=255), nullable=False),
        sa.Column("class_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("formative_id", "class_id", name=op.f("pk_formative_classes")),
    )
    op.create_table(
        "formative_students",
        sa.Column("formative_id", sa.String(length=255), nullable=False),
        sa.Column("student_id", sa.String(length=255), nullable=False),
        sa.Column("class_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("formative_id", "student_id", name=op.f("pk_formative_students")),
    )


def downgrade() -> None:
    op.drop_table("formative_students")
    op.drop_table("formative_classes")
