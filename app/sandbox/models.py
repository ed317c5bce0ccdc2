"""The platform's records: developer keys, courses, users, assignments, line items, results.

Plain mutable dataclasses, owned by `SandboxState` and changed only under its lock.
Scores are `Decimal`; times are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class CourseState(StrEnum):
    UNPUBLISHED = "unpublished"
    AVAILABLE = "available"
    CONCLUDED = "concluded"
    DELETED = "deleted"


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    INVITED = "invited"
    INACTIVE = "inactive"
    COMPLETED = "completed"
    DELETED = "deleted"


class GradingType(StrEnum):
    POINTS = "points"
    PASS_FAIL = "pass_fail"


@dataclass
class DeveloperKey:
    """An LTI 1.3 developer key. The tool's public key is inline (`public_jwk`: one JWK or a
    JWKS) or at `public_jwk_url`, fetched on every token request like Canvas does."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    public_jwk: dict[str, Any] | None = None
    public_jwk_url: str | None = None
    active: bool = True
    enabled_in_account: bool = True
    token_grants: int = 0
    token_grant_times: list[datetime] = field(default_factory=list)
    account_deployment_id: str | None = None
    """Set when the key was made by Dynamic Registration: the tool is then installed in the
    (single) root account, so every course sees it under this one deployment id."""


@dataclass
class RegistrationToken:
    """A Dynamic Registration in progress: the token an admin's session hands the tool."""

    token: str
    expires_at: datetime
    issuer: str | None = None
    """The issuer the OpenID configuration names (None: the platform's own)."""
    scopes_supported: tuple[str, ...] | None = None
    """Scopes the platform offers during this registration (None: every AGS scope)."""
    scopes_granted: tuple[str, ...] | None = None
    """Scopes the admin lets the key have, of those requested (None: all requested)."""
    client_id: str | None = None
    """The developer key the registration made, once it did."""


@dataclass
class ToolRegistration:
    """What a tool registered through Dynamic Registration (kept for inspection)."""

    client_id: str
    deployment_id: str
    body: dict[str, Any]
    created_at: datetime


@dataclass
class ToolInstall:
    """A ContextExternalTool of a developer key visible from a course."""

    client_id: str
    deployment_id: str


@dataclass
class Course:
    id: str
    name: str
    lti_context_id: str
    state: CourseState = CourseState.AVAILABLE
    tools: dict[str, ToolInstall] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        return self.state in (CourseState.AVAILABLE, CourseState.CONCLUDED)


@dataclass
class User:
    id: str
    lti_id: str
    name: str
    email: str | None = None


@dataclass
class Enrollment:
    course_id: str
    user_id: str
    state: EnrollmentState = EnrollmentState.ACTIVE


@dataclass
class Assignment:
    id: str
    course_id: str
    name: str
    points_possible: Decimal
    client_id: str | None
    """The developer key of the tool the assignment launches, if any."""
    resource_link_id: str | None
    launch_url: str | None = None
    allowed_attempts: int | None = None
    """None or -1: unlimited."""
    grading_type: GradingType = GradingType.POINTS
    deleted: bool = False
    unlock_at: str | None = None
    due_at: str | None = None


@dataclass
class LineItem:
    id: str
    assignment_id: str
    course_id: str
    label: str
    score_maximum: Decimal
    client_id: str | None
    coupled: bool
    resource_id: str | None = None
    tag: str | None = None
    resource_link_id: str | None = None
    submission_type_extension: dict[str, Any] | None = None
    active: bool = True


@dataclass
class Comment:
    text: str
    author: str
    created_at: datetime
    attempt: int


@dataclass
class AttemptRecord:
    attempt: int
    submission_type: str
    url: str | None
    body: str | None
    submitted_at: datetime
    content_items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Submission:
    """A student's submission to an assignment: what the teacher sees in the gradebook."""

    assignment_id: str
    user_id: str
    score: Decimal | None = None
    grade: str | None = None
    attempt: int = 0
    submission_type: str | None = None
    url: str | None = None
    body: str | None = None
    submitted_at: datetime | None = None
    graded_at: datetime | None = None
    grader: str | None = None
    """``tool:<client_id>`` when passed back, ``teacher`` when graded in the gradebook."""
    needs_review: bool = False
    comments: list[Comment] = field(default_factory=list)
    history: list[AttemptRecord] = field(default_factory=list)

    @property
    def workflow_state(self) -> str:
        if self.needs_review:
            return "pending_review"
        if self.score is not None:
            return "graded"
        return "submitted" if self.attempt > 0 else "unsubmitted"


@dataclass
class Result:
    id: str
    line_item_id: str
    user_id: str
    score_given: Decimal | None
    score_maximum: Decimal | None
    comment: str | None
    activity_progress: str
    grading_progress: str
    created_at: datetime
    updated_at: datetime
    extension: dict[str, Any] | None = None
    active: bool = True
