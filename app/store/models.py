"""SQLAlchemy models: the whole state of the service.

Instances keep nothing of their own; every fact below is shared through the database.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.store.types import ExactDecimal, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        Decimal: ExactDecimal(),
        dict[str, Any]: JSON(),
    }


class JobStatus(enum.StrEnum):
    pending = "pending"
    in_flight = "in_flight"
    delivered = "delivered"
    failed = "failed"
    superseded = "superseded"
    quarantined = "quarantined"
    """The row could not be read back (a value the driver cannot decode): set aside, never
    claimed again, until an operator fixes or removes it (README runbook)."""


class JobKind(enum.StrEnum):
    automatic = "automatic"
    manual = "manual"


class PassbackMode(enum.StrEnum):
    grades = "grades"
    complete_incomplete = "complete_incomplete"


class Platform(Base):
    """A registered LTI 1.3 platform (one Canvas developer key on one Canvas)."""

    __tablename__ = "platforms"
    __table_args__ = (UniqueConstraint("issuer", "client_id", name="uq_platforms_issuer_client"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    issuer: Mapped[str] = mapped_column(String(512))
    client_id: Mapped[str] = mapped_column(String(255))
    deployment_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_url: Mapped[str] = mapped_column(String(2048))
    token_audience: Mapped[str | None] = mapped_column(String(2048))
    jwks_url: Mapped[str] = mapped_column(String(2048))
    allowed_hosts: Mapped[list[str]] = mapped_column(JSON, default=list)
    label: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    @property
    def audience(self) -> str:
        return self.token_audience or self.token_url


class RegistrationInvite(Base):
    """A single-use link an operator hands to a platform admin to start Dynamic Registration.

    Only the SHA-256 of the link's secret is kept. `used_at` is set while a registration runs
    (and cleared again if it fails before a platform is recorded); `platform_id` names the
    registration it made.
    """

    __tablename__ = "registration_invites"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    platform_id: Mapped[str | None] = mapped_column(ForeignKey("platforms.id"))


class Formative(Base):
    """What the service knows of a formative, refreshed by every event that mentions it."""

    __tablename__ = "formatives"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    title: Mapped[str] = mapped_column(String(1024), default="")
    organization_id: Mapped[str] = mapped_column(String(255), default="")
    license: Mapped[str] = mapped_column(String(64), default="")
    auto_passback: Mapped[bool] = mapped_column(Boolean, default=False)
    all_auto_graded: Mapped[bool] = mapped_column(Boolean, default=False)
    teacher_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime]


class FormativeClass(Base):
    """A class of a formative, as `PUT /v1/formatives/{id}` names it."""

    __tablename__ = "formative_classes"

    formative_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    class_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), default="")


class FormativeStudent(Base):
    """A student of a formative's classes, known before (or besides) any launch or event."""

    __tablename__ = "formative_students"

    formative_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    student_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    class_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(1024), default="")


class Launch(Base):
    """The latest Canvas launch of a student into a formative: where grades must go."""

    __tablename__ = "launches"
    __table_args__ = (
        UniqueConstraint("formative_id", "student_id", name="uq_launches_formative_student"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    formative_id: Mapped[str] = mapped_column(String(255))
    student_id: Mapped[str] = mapped_column(String(255))
    class_id: Mapped[str] = mapped_column(String(255))
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"))
    deployment_id: Mapped[str] = mapped_column(String(255))
    lti_user_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[str | None] = mapped_column(String(255))
    context_title: Mapped[str | None] = mapped_column(String(1024))
    resource_link_id: Mapped[str | None] = mapped_column(String(255))
    lineitem_url: Mapped[str | None] = mapped_column(String(2048))
    lineitems_url: Mapped[str | None] = mapped_column(String(2048))
    ags_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    launched_at: Mapped[datetime]

    platform: Mapped[Platform] = relationship(lazy="raise")


class UsedIdToken(Base):
    """A launch id_token already recorded, and the one Formative student it binds: the same
    token posted for another student is refused. Kept until the token expires (then it can
    no longer be verified anyway, and the row may be pruned)."""

    __tablename__ = "used_id_tokens"

    token_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the token's issuer, `sub`, `nonce` and `jti` (empty when absent)."""
    student_id: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime]


class StudentWork(Base):
    """The latest score the service knows for a student on a formative."""

    __tablename__ = "student_work"

    formative_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    student_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    class_id: Mapped[str] = mapped_column(String(255))
    student_name: Mapped[str] = mapped_column(String(1024), default="")
    started: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    score: Mapped[Decimal | None]
    max_score: Mapped[Decimal | None]
    submitted_at: Mapped[datetime | None]
    response_url: Mapped[str | None] = mapped_column(String(2048))
    last_event_at: Mapped[datetime]


class SubmissionEvent(Base):
    """Every event received, with the answer given the first time (idempotency on event_id)."""

    __tablename__ = "submission_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    formative_id: Mapped[str] = mapped_column(String(255), index=True)
    student_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    # Pruning walks events by age (retention).
    received_at: Mapped[datetime] = mapped_column(index=True)
    decision: Mapped[str] = mapped_column(String(32))
    response_body: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(BigId)


class Batch(Base):
    """A teacher's manual send: the selection, who sent it, and its jobs."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("formative_id", "idempotency_key", name="uq_batches_formative_idem"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    formative_id: Mapped[str] = mapped_column(String(255), index=True)
    mode: Mapped[str] = mapped_column(String(32))
    sent_by_teacher_id: Mapped[str] = mapped_column(String(255))
    sent_via: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str] = mapped_column(String(64))
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    response_body: Mapped[str] = mapped_column(Text, default="")
    # Pruning walks batches by age (retention).
    created_at: Mapped[datetime] = mapped_column(index=True)


def job_origin(lineitem_url: str) -> str:
    """``scheme://host[:port]`` of a line item, lower-cased: the AGS host that takes its score
    (each host of a registration has its own delivery lane)."""
    parts = urlsplit(lineitem_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _origin_of_line_item(context: DefaultExecutionContext) -> str:
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return job_origin(str(parameters["lineitem_url"]))


class PassbackJob(Base):
    """One score to deliver to one (line item, student) pair: the outbox row."""

    __tablename__ = "passback_jobs"
    __table_args__ = (
        # Claiming the next due job walks this index: O(log n) in the queue length.
        Index("ix_passback_jobs_due", "status", "next_attempt_at"),
        # Claiming per lane (a platform's AGS host) and finding which lanes have pending work.
        Index("ix_passback_jobs_lane_due", "status", "platform_id", "origin", "next_attempt_at"),
        Index("ix_passback_jobs_pair", "pair_key", "status"),
        Index("ix_passback_jobs_formative_student", "formative_id", "student_id"),
        # Pruning finds finished jobs past the retention time without scanning the rest.
        Index("ix_passback_jobs_finished", "kind", "status", "finished_at"),
        # Automatic passback fires at most once per (student, line item), even under races.
        Index(
            "uq_passback_jobs_automatic_pair",
            "pair_key",
            unique=True,
            sqlite_where=text("kind = 'automatic'"),
            postgresql_where=text("kind = 'automatic'"),
        ),
        # At most one delivery in flight per pair.
        Index(
            "uq_passback_jobs_in_flight_pair",
            "pair_key",
            unique=True,
            sqlite_where=text("status = 'in_flight'"),
            postgresql_where=text("status = 'in_flight'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.pending)
    pair_key: Mapped[str] = mapped_column(String(64))
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), index=True)
    formative_id: Mapped[str] = mapped_column(String(255))
    student_id: Mapped[str] = mapped_column(String(255))
    class_id: Mapped[str] = mapped_column(String(255))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    lineitem_url: Mapped[str] = mapped_column(String(2048))
    origin: Mapped[str] = mapped_column(String(2048), default=_origin_of_line_item)
    """``scheme://host[:port]`` of the line item: the AGS host, whose delivery lane claims it
    (filled from `lineitem_url` when an insert does not give it)."""
    lti_user_id: Mapped[str] = mapped_column(String(255))

    # What to send: the Formative score and maximum, or an override, or complete/incomplete.
    mode: Mapped[str] = mapped_column(String(32), default=PassbackMode.grades)
    score: Mapped[Decimal | None]
    max_score: Mapped[Decimal | None]
    override_percent: Mapped[Decimal | None]
    override_points: Mapped[Decimal | None]
    complete: Mapped[bool | None] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    score_timestamp: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    response_url: Mapped[str | None] = mapped_column(String(2048))
    # The job opens the student's submission in Canvas (the first passback of it). Lowered
    # only when Canvas says the attempts are exhausted.
    new_submission: Mapped[bool] = mapped_column(Boolean, default=True)
    # An earlier attempt may have landed without an answer saying so (timeout after sending,
    # reset, a worker that died mid-post): before resending, the student's result is read; if
    # it cannot tell, resends open no new Canvas submission, and a platform's "already there"
    # answer means delivered.
    maybe_delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    # An earlier job of the same submission may have opened it (its outcome is unknown): the
    # student's result is read before opening one.
    submission_unconfirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    acting_teacher_id: Mapped[str | None] = mapped_column(String(255))

    # Delivery bookkeeping.
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Tries since the job was last queued (or retried by an operator) that count toward its
    # backoff: throttled answers and result reads do not.
    tries_since_queued: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    outcome_code: Mapped[str | None] = mapped_column(String(64))
    platform_message: Mapped[str | None] = mapped_column(Text)
    canvas_points: Mapped[Decimal | None]
    score_given: Mapped[Decimal | None]
    score_maximum: Mapped[Decimal | None]
    superseded_by: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    attempts: Mapped[list[JobAttempt]] = relationship(
        back_populates="job", lazy="raise", order_by="JobAttempt.id"
    )


class JobAttempt(Base):
    """One try at delivering a job: what the platform answered."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("passback_jobs.id"), index=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    http_status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[PassbackJob] = relationship(back_populates="attempts", lazy="raise")


class ToolKeyRecord(Base):
    """One of the tool's RSA signing keys, shared by every instance. The newest row is the
    current key; the one before it stays published in the JWKS (rotation)."""

    __tablename__ = "tool_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    """The RFC 7638 thumbprint of the public key."""
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The private key's PEM, encrypted with the key-encryption key (app.store.tool_keys)."""
    created_at: Mapped[datetime]


JOBS_TABLE = cast(Table, PassbackJob.__table__)
"""passback_jobs as a Core table (for statements built once and run with many parameters)."""
ATTEMPTS_TABLE = cast(Table, JobAttempt.__table__)
