"""What a platform's answer means for a delivery: the one place that reads statuses and texts.

Every answer (token endpoint, line item read, score post, or a transport failure) becomes an
`Outcome`: an `Action` the delivery engine takes, a stable `code`, the platform's message
verbatim, and hints (Retry-After, throttling, X-Rate-Limit-Remaining). The failure codes of
SPEC §2.6 and the text a teacher reads for each live here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import httpx

from app.lti.egress import BlockedAddressError
from app.lti.http import json_document

MESSAGE_LIMIT = 2000
"""Longest platform message kept (an HTML error page can be large)."""
RETRY_AFTER_CAP_SECONDS = 3600.0


class Action(StrEnum):
    """What the delivery engine does next."""

    delivered = "delivered"
    retry = "retry"
    refresh_token = "refresh_token"
    """A generic access-token problem: get a fresh token once and resend once."""
    superseded = "superseded"
    resend_without_new_submission = "resend_without_new_submission"
    failed = "failed"


class FailureCode(StrEnum):
    """Why a job failed for good (SPEC §2.6, plus the few the service adds)."""

    assignment_not_linked = "assignment_not_linked"
    course_deleted = "course_deleted"
    course_concluded = "course_concluded"
    student_not_in_course = "student_not_in_course"
    developer_key_inactive = "developer_key_inactive"
    developer_key_not_enabled = "developer_key_not_enabled"
    tool_not_installed = "tool_not_installed"
    scope_not_granted = "scope_not_granted"
    client_assertion_rejected = "client_assertion_rejected"
    platform_unavailable = "platform_unavailable"
    access_token_rejected = "access_token_rejected"
    platform_rejected = "platform_rejected"
    canvas_points_missing = "canvas_points_missing"
    platform_not_registered = "platform_not_registered"
    url_not_allowed = "url_not_allowed"


class RetryCode(StrEnum):
    """Why an attempt is retried (recorded on attempts; not shown as a failure)."""

    throttled = "throttled"
    rate_limited = "rate_limited"
    platform_error = "platform_error"
    timeout = "timeout"
    connection_error = "connection_error"
    invalid_answer = "invalid_answer"


@dataclass(frozen=True)
class FailureReason:
    """What a teacher reads about a failed passback: what happened, and what to do."""

    title: str
    explanation: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.explanation} {self.fix}"


FAILURE_REASONS: Mapping[FailureCode, FailureReason] = MappingProxyType(
    {
        FailureCode.assignment_not_linked: FailureReason(
            "Assignment no longer linked",
            "The Canvas assignment no longer uses this Formative (it was deleted, or changed "
            "to another tool).",
            "Enter this grade in Canvas by hand, or relink the assignment to the formative.",
        ),
        FailureCode.course_deleted: FailureReason(
            "Course deleted",
            "The Canvas course was deleted, so it cannot receive grades.",
            "Enter grades elsewhere; a deleted course cannot receive grades.",
        ),
        FailureCode.course_concluded: FailureReason(
            "Course concluded",
            "The Canvas course has concluded and no longer accepts grades.",
            "Reopen the course in Canvas (or extend its end date), then send the grades again.",
        ),
        FailureCode.student_not_in_course: FailureReason(
            "Student not in the course",
            "Canvas says this student is not enrolled as an active student in the course.",
            "Check the student's enrollment in Canvas, then send the grade again.",
        ),
        FailureCode.developer_key_inactive: FailureReason(
            "Formative is switched off in Canvas",
            "Canvas says Formative's developer key is unknown or turned off.",
            "A Canvas administrator must turn the Formative developer key on.",
        ),
        FailureCode.developer_key_not_enabled: FailureReason(
            "Formative is not enabled for this Canvas account",
            "Canvas says Formative's developer key is not enabled for this account.",
            "A Canvas administrator must enable the Formative developer key for the account.",
        ),
        FailureCode.tool_not_installed: FailureReason(
            "Formative is not installed in this course",
            "Canvas says Formative is not installed in this course.",
            "Ask a Canvas administrator to install Formative in the course or its account.",
        ),
        FailureCode.scope_not_granted: FailureReason(
            "Formative may not send grades",
            "Canvas refused the permission to send grades (the developer key lacks the "
            "Assignment and Grade Services scopes).",
            "A Canvas administrator must enable the grade scopes on the Formative developer key.",
        ),
        FailureCode.client_assertion_rejected: FailureReason(
            "Canvas connection settings are wrong",
            "Canvas rejected Formative's sign-in (the registration's audience, client id or "
            "key does not match); Canvas's own message is shown.",
            "An administrator must correct the platform registration.",
        ),
        FailureCode.platform_unavailable: FailureReason(
            "Canvas did not accept the grade in time",
            "Canvas was unavailable or busy and did not accept the grade before the deadline.",
            "Try sending the grade again later.",
        ),
        FailureCode.access_token_rejected: FailureReason(
            "Canvas refused Formative's access",
            "Canvas refused Formative's access token, even a freshly issued one.",
            "An administrator should check the platform registration; then send again.",
        ),
        FailureCode.platform_rejected: FailureReason(
            "Canvas refused the grade",
            "Canvas refused the grade; its message is shown.",
            "Enter the grade in Canvas by hand, or contact support with Canvas's message.",
        ),
        FailureCode.canvas_points_missing: FailureReason(
            "The Canvas assignment has no points",
            "The Canvas assignment is worth 0 points, so no grade was sent automatically.",
            "Give the assignment points in Canvas, then send grades with manual passback.",
        ),
        FailureCode.platform_not_registered: FailureReason(
            "Canvas is not connected",
            "The Canvas this student came from is not (or no longer) connected to Formative.",
            "An administrator must register or reactivate the platform.",
        ),
        FailureCode.url_not_allowed: FailureReason(
            "Canvas address not allowed",
            "The grade would go to an address the platform registration does not allow.",
            "An administrator must add the Canvas host to the registration's allowed hosts.",
        ),
    }
)

TEACHER_TEXTS: Mapping[str, str] = MappingProxyType(
    {code.value: reason.text for code, reason in FAILURE_REASONS.items()}
)
"""Failure code → what a teacher reads (explanation and fix), for the UI."""


def teacher_text(code: str | None) -> str | None:
    """The teacher-facing explanation and fix for a failure code (None for other codes)."""
    return TEACHER_TEXTS.get(code) if code else None


@dataclass(frozen=True)
class Outcome:
    """One platform answer, classified."""

    action: Action
    code: str
    http_status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    throttled: bool = False
    rate_limit_remaining: float | None = None
    outcome_unknown: bool = False
    """The request may have been applied although no answer says so (timeout after sending,
    reset connection, gateway error): later resends must not open a new submission."""

    @property
    def is_failure(self) -> bool:
        return self.action is Action.failed


def failure(code: FailureCode, message: str | None, status: int | None = None) -> Outcome:
    return Outcome(Action.failed, code.value, http_status=status, message=message)


# --- Reading answers --------------------------------------------------------------------------


def platform_message(body: str) -> str | None:
    """The human message of an error body, verbatim, whatever the shape.

    Canvas answers ``{"errors": {"message": …}}``, ``{"errors": [{"message": …}]}`` or
    ``{"error": …}``; OAuth endpoints ``{"error": …, "error_description": …}``; others plain
    text or HTML. Unknown JSON shapes and non-JSON bodies are kept as text.
    """
    text = body.strip()
    if not text:
        return None
    try:
        document = json_document(text)
    except ValueError:
        return text[:MESSAGE_LIMIT]
    message = _message_of(document)
    return (message if message is not None else text)[:MESSAGE_LIMIT]


def _message_of(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    errors = document.get("errors")
    if isinstance(errors, dict) and isinstance(errors.get("message"), str):
        return str(errors["message"])
    if isinstance(errors, list):
        messages = [
            str(item["message"])
            for item in errors
            if isinstance(item, dict) and isinstance(item.get("message"), str)
        ]
        if messages:
            return "; ".join(messages)
    error = document.get("error")
    description = document.get("error_description")
    if isinstance(error, str) and isinstance(description, str) and description:
        return f"{error}: {description}"
    if isinstance(error, str):
        return error
    for key in ("message", "detail", "title"):
        if isinstance(document.get(key), str):
            return str(document[key])
    return None


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None when absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


def rate_limit_remaining(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    value = headers.get("x-rate-limit-remaining")
    if value is None:
        return None
    try:
        remaining = float(value)
    except ValueError:
        return None
    return remaining if math.isfinite(remaining) else None


def _contains(message: str | None, *needles: str) -> bool:
    if not message:
        return False
    lowered = message.lower()
    return any(needle.lower() in lowered for needle in needles)


THROTTLE_TEXT = "Rate Limit Exceeded"
STALE_TIMESTAMP_TEXT = "before last updated timestamp"
ALREADY_EXISTS_TEXT = "already exists"
MAX_ATTEMPTS_TEXT = "maximum number of allowed attempts"

# 401 messages that name a lasting registration problem; every other 401 is a token problem.
_UNAUTHORIZED_FAILURES: tuple[tuple[str, FailureCode], ...] = (
    ("Unknown or inactive Developer Key", FailureCode.developer_key_inactive),
    ("Invalid Developer Key", FailureCode.developer_key_not_enabled),
    ("Access Token not linked to a Tool", FailureCode.tool_not_installed),
    ("Insufficient permissions", FailureCode.scope_not_granted),
)


def is_throttled(status: int, body: str) -> bool:
    """Canvas throttles with a 403 whose body says so; other 403s are real refusals."""
    return status == 403 and THROTTLE_TEXT.lower() in body.lower()


def _transient(
    status: int, message: str | None, headers: httpx.Headers | Mapping[str, str], body: str
) -> Outcome:
    throttled = status == 429 or is_throttled(status, body)
    if throttled:
        code = RetryCode.rate_limited if status == 429 else RetryCode.throttled
    else:
        code = RetryCode.platform_error
    return Outcome(
        Action.retry,
        code,
        http_status=status,
        message=message,
        retry_after=retry_after_seconds(headers.get("retry-after")),
        throttled=throttled,
        rate_limit_remaining=rate_limit_remaining(headers),
        # A gateway timeout is a proxy giving up while the platform may still be applying
        # the score: like our own timeout, its outcome is unknown. Other 5xx answers come
        # from a request the platform did not complete.
        outcome_unknown=status == 504,
    )


def _is_transient_status(status: int, body: str) -> bool:
    return status >= 500 or status in (408, 425, 429) or is_throttled(status, body)


def classify_ags_answer(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: str,
    *,
    after_unknown: bool = False,
) -> Outcome:
    """An AGS answer (line item read or score post).

    `after_unknown`: an earlier attempt of this job may have landed, so Moodle's 409 and
    Open edX's 400 "already exists" mean the score is there.
    """
    message = platform_message(body)
    remaining = rate_limit_remaining(headers)
    if 200 <= status < 300:
        return Outcome(
            Action.delivered, "delivered", http_status=status, rate_limit_remaining=remaining
        )
    if _is_transient_status(status, body):
        return _transient(status, message, headers, body)
    if status == 401:
        for needle, code in _UNAUTHORIZED_FAILURES:
            if _contains(message, needle):
                return failure(code, message, status)
        return Outcome(Action.refresh_token, "token_refresh", http_status=status, message=message)
    if status == 404:
        if _contains(message, "Context is deleted or not found", "Context not found"):
            return failure(FailureCode.course_deleted, message, status)
        return failure(FailureCode.assignment_not_linked, message, status)
    if status == 412:
        # The line item belongs to another tool, or the link is not the line item's.
        return failure(FailureCode.assignment_not_linked, message, status)
    if status == 422 or status == 400 or status == 403 or status == 409:
        return _classify_refusal(status, message, after_unknown=after_unknown)
    return failure(FailureCode.platform_rejected, message, status)


def _classify_refusal(status: int, message: str | None, *, after_unknown: bool) -> Outcome:
    if _contains(message, "course has concluded"):
        return failure(FailureCode.course_concluded, message, status)
    if _contains(message, "not found in course or is not a student", "not enrolled"):
        return failure(FailureCode.student_not_in_course, message, status)
    if status == 422 and _contains(message, MAX_ATTEMPTS_TEXT):
        return Outcome(
            Action.resend_without_new_submission,
            "attempts_exhausted",
            http_status=status,
            message=message,
        )
    if status == 400 and _contains(message, STALE_TIMESTAMP_TEXT):
        return Outcome(Action.superseded, "superseded", http_status=status, message=message)
    if after_unknown and (
        status == 409 or (status == 400 and _contains(message, ALREADY_EXISTS_TEXT))
    ):
        return Outcome(Action.delivered, "delivered_earlier", http_status=status, message=message)
    if status == 409:
        # Moodle refuses an earlier (or equal) timestamp: a newer grade is already there.
        return Outcome(Action.superseded, "superseded", http_status=status, message=message)
    return failure(FailureCode.platform_rejected, message, status)


def classify_token_answer(status: int, headers: httpx.Headers, body: str) -> Outcome:
    """An OAuth2 token endpoint answer (success is handled by the caller)."""
    message = platform_message(body)
    if _is_transient_status(status, body):
        return _transient(status, message, headers, body)
    error = _oauth_error(body)
    if error == "invalid_client" or (status == 401 and error is None):
        return failure(FailureCode.developer_key_inactive, message, status)
    if error == "invalid_scope":
        return failure(FailureCode.scope_not_granted, message, status)
    return failure(FailureCode.client_assertion_rejected, message, status)


def _oauth_error(body: str) -> str | None:
    try:
        document = json_document(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, str) else None


def invalid_answer(status: int, detail: str) -> Outcome:
    """A 2xx whose body cannot be used (not JSON, a field missing): retried."""
    return Outcome(Action.retry, RetryCode.invalid_answer, http_status=status, message=detail)


def classify_transport_error(exc: httpx.HTTPError, *, request_sent: bool) -> Outcome:
    """A failure without a usable answer. `request_sent`: the request may have reached the
    platform.

    Connection failures (refused, DNS, connect timeout, no pool slot) happen before anything is
    sent; a read timeout or a reset afterwards leaves the outcome unknown.
    """
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc.__cause__, BlockedAddressError):
        # The host resolves to an internal address: refused before connecting, and it will
        # be every time until an operator changes the registration or the DNS.
        return failure(FailureCode.url_not_allowed, detail[:MESSAGE_LIMIT])
    before_sending = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    unknown = request_sent and not before_sending
    if isinstance(exc, httpx.DecodingError):
        code = RetryCode.invalid_answer  # too large (app.lti.http) or undecodable
    elif isinstance(exc, httpx.TimeoutException):
        code = RetryCode.timeout
    else:
        code = RetryCode.connection_error
    return Outcome(Action.retry, code, message=detail[:MESSAGE_LIMIT], outcome_unknown=unknown)
