"""JSON views of the platform's records for the admin API and the gradebook.

Scores appear as exact decimal strings (``"8.3"``) so callers can compare them to the cent.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.sandbox.models import (
    Assignment,
    Course,
    DeveloperKey,
    Enrollment,
    LineItem,
    Submission,
    User,
)
from app.sandbox.rendering import decimal_text
from app.sandbox.state import SandboxState
from app.sandbox.urls import line_item_url, line_items_url, platform_jwks_url, token_url


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _number(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def key_view(key: DeveloperKey) -> dict[str, Any]:
    return {
        "client_id": key.client_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "public_jwk": key.public_jwk,
        "public_jwk_url": key.public_jwk_url,
        "active": key.active,
        "enabled_in_account": key.enabled_in_account,
        "token_grants": key.token_grants,
    }


def course_view(course: Course, origin: str) -> dict[str, Any]:
    return {
        "id": course.id,
        "name": course.name,
        "state": course.state.value,
        "published": course.published,
        "lti_context_id": course.lti_context_id,
        "line_items_url": line_items_url(origin, course.id),
        "tools": [
            {"client_id": tool.client_id, "deployment_id": tool.deployment_id}
            for tool in course.tools.values()
        ],
    }


def line_item_view(state: SandboxState, line_item: LineItem, origin: str) -> dict[str, Any]:
    primary = state.primary_line_item(line_item.assignment_id)
    return {
        "id": line_item.id,
        "url": line_item_url(origin, line_item.course_id, line_item.id),
        "label": line_item.label,
        "score_maximum": decimal_text(line_item.score_maximum),
        "client_id": line_item.client_id,
        "coupled": line_item.coupled,
        "primary": primary is not None and primary.id == line_item.id,
        "active": line_item.active,
        "resource_link_id": line_item.resource_link_id,
    }


def assignment_view(state: SandboxState, assignment: Assignment, origin: str) -> dict[str, Any]:
    line_items = [
        li for li in state.line_items_of(assignment.course_id) if li.assignment_id == assignment.id
    ]
    primary = state.primary_line_item(assignment.id)
    return {
        "id": assignment.id,
        "course_id": assignment.course_id,
        "name": assignment.name,
        "points_possible": decimal_text(assignment.points_possible),
        "grading_type": assignment.grading_type.value,
        "allowed_attempts": assignment.allowed_attempts,
        "client_id": assignment.client_id,
        "resource_link_id": assignment.resource_link_id,
        "deleted": assignment.deleted,
        "line_item_url": (
            line_item_url(origin, assignment.course_id, primary.id) if primary else None
        ),
        "line_items": [line_item_view(state, li, origin) for li in line_items],
    }


def student_view(user: User, enrollment: Enrollment | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "user_id": user.id,
        "lti_id": user.lti_id,
        "name": user.name,
        "email": user.email,
    }
    if enrollment is not None:
        view["enrollment_state"] = enrollment.state.value
    return view


def submission_view(submission: Submission | None) -> dict[str, Any]:
    """What a teacher sees in one gradebook cell (an empty cell when there is no submission)."""
    if submission is None:
        submission = Submission(assignment_id="", user_id="")
    score = submission.score
    return {
        "score": _number(score),
        "score_rounded": (
            None if score is None else decimal_text(score.quantize(Decimal("0.01"), ROUND_HALF_UP))
        ),
        "grade": submission.grade,
        "attempt": submission.attempt,
        "workflow_state": submission.workflow_state,
        "submission_type": submission.submission_type,
        "url": submission.url,
        "body": submission.body,
        "submitted_at": _time(submission.submitted_at),
        "graded_at": _time(submission.graded_at),
        "grader": submission.grader,
        "needs_review": submission.needs_review,
        "comments": [
            {
                "comment": comment.text,
                "author": comment.author,
                "created_at": _time(comment.created_at),
                "attempt": comment.attempt,
            }
            for comment in submission.comments
        ],
        "attempts": [
            {
                "attempt": record.attempt,
                "submission_type": record.submission_type,
                "url": record.url,
                "body": record.body,
                "submitted_at": _time(record.submitted_at),
                "content_items": record.content_items,
            }
            for record in submission.history
        ],
    }


def platform_view(state: SandboxState, origin: str) -> dict[str, Any]:
    """What a tool registration needs to know about this platform."""
    return {
        "issuer": state.issuer,
        "token_url": token_url(origin),
        "jwks_url": platform_jwks_url(origin),
        "platform_kid": state.platform_kid,
    }
