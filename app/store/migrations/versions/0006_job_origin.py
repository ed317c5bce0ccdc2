"""passback_jobs.origin: the AGS host of each job, so delivery lanes claim per host

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_BATCH = 5000


def _origin(url: str) -> str:
    """As app.store.jobs.job_origin (kept here as it is today: migrations do not follow code)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _backfill() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        # scheme://netloc: up to the first /, ? or # after the "//", as urlsplit reads it.
        connection.execute(
            sa.text(
                "UPDATE passback_jobs SET origin = "
                "lower(substring(lineitem_url from '^[^:/?#]+://[^/?#]*'))"
            )
        )
        return
    jobs = sa.table(
        "passback_jobs",
        sa.column("id", sa.BigInteger),
        sa.column("lineitem_url"),
        sa.column("origin"),
    )
    while True:
        rows = connection.execute(
            sa.select(jobs.c.id, jobs.c.lineitem_url)
            .where(jobs.c.origin.is_(None))
            .limit(BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            jobs.update()
            .where(jobs.c.id == sa.bindparam("b_id"))
            .values(origin=sa.bindparam("b_origin")),
            [{"b_id": row.id, "b_origin": _origin(row.lineitem_url)} for row in rows],
        )


def upgrade() -> None:
    with op.batch_alter_table("passback_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=2048), nullable=True))
    _backfill()
    with op.batch_alter_table("passback_jobs", schema=None) as batch_op:
        batch_op.alter_column("origin", existing_type=sa.String(length=2048), nullable=False)
        batch_op.drop_index("ix_passback_jobs_platform_due")
        batch_op.create_index(
            "ix_passback_jobs_lane_due",
            ["status", "platform_id", "origin", "next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("passback_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_passback_jobs_lane_due")
        batch_op.create_index(
            "ix_passback_jobs_platform_due",
            ["status", "platform_id", "next_attempt_at"],
            unique=False,
        )
        batch_op.drop_column("origin")
