"""indexes for pruning finished jobs, old events and old batches (retention)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("passback_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_passback_jobs_finished", ["kind", "status", "finished_at"], unique=False
        )
    with op.batch_alter_table("submission_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_submission_events_received_at"), ["received_at"], unique=False
        )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_created_at"))
    with op.batch_alter_table("submission_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submission_events_received_at"))
    with op.batch_alter_table("passback_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_passback_jobs_finished")
