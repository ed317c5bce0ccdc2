"""POST .../line_items/:id/scores after authorization: canvas-ags.md §3.1 steps 8–17, §3.4–3.5.

Checks run in Canvas's order and stop at the first failure. Then, as in Canvas, a new
submission (a new attempt) is made *before* the model validation and the grading, so a post
that fails validation still leaves an attempt behind (§9). Only an assignment's primary line
item touches submissions; scores on other line items are stored as Results only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from app.sandbox.authorization import AgsContext
from app.sandbox.errors import (
    FieldError,
    LtiServiceError,
    NotFound,
    ParamMissing,
    ValidationFailed,
)
from app.sandbox.models import (
    Assignment,
    AttemptRecord,
    Comment,
    GradingType,
    LineItem,
    Result,
    Submission,
    User,
)
from app.sandbox.protocol import (
    ACTIVITY_PROGRESS_VALUES,
    EXT_SUBMISSION,
    GRADING_PROGRESS_GRADED,
    GRADING_PROGRESS_VALUES,
)
from app.sandbox.rendering import decimal_text
from app.sandbox.state import SandboxState
from app.sandbox.timestamps import iso8601_ms, parse_time

COMMENT_AUTHOR = "Tool (author hidden)"
MAX_SUBMITTED_AT_SKEW = timedelta(minutes=1)
_TRUE = frozenset({"true", "1", "yes", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "f", ""})


class _Invalid:
    """A score parameter that is present but not a number."""


INVALID = _Invalid()
Number = Decimal | None | _Invalid


def parse_flag(value: object) -> bool | None:
    """Rails-style boolean: True/False for the usual spellings, None when absent or odd."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def parse_number(value: object) -> Number:
    """A score parameter: Decimal, None when absent or blank, INVALID when not numeric."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return INVALID
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return INVALID
        return number if number.is_finite() else INVALID
    return INVALID


def _as_compared(number: Number) -> Decimal:
    """What Ruby's ``to_f`` makes of a parameter in the numeric guards (non-numbers are 0)."""
    return number if isinstance(number, Decimal) else Decimal(0)


def canvas_score(
    score_given: Decimal, score_maximum: Decimal, line_item_maximum: Decimal
) -> Decimal:
    """Canvas's scaling: scoreGiven × lineItemMax ÷ scoreMaximum; a zero maximum means ×1."""
    if score_maximum == 0:
        return score_given
    return score_given * line_item_maximum / score_maximum


@dataclass
class ScoreRequest:
    """The parameters of one score post, read once."""

    params: dict[str, Any]
    extension: dict[str, Any] = field(init=False)
    score_given: Number = field(init=False)
    score_maximum: Number = field(init=False)

    def __post_init__(self) -> None:
        extension = self.params.get(EXT_SUBMISSION)
        self.extension = extension if isinstance(extension, dict) else {}
        self.score_given = parse_number(self.params.get("scoreGiven"))
        self.score_maximum = parse_number(self.params.get("scoreMaximum"))

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return str(value)

    @property
    def is_reset(self) -> bool:
        """Canvas clears the grade (§3.4) unless the progress is graded and a score is given."""
        return (
            self.params.get("gradingProgress") not in GRADING_PROGRESS_GRADED
            or self.score_given is None
        )

    @property
    def file_items(self) -> list[dict[str, Any]]:
        items = self.extension.get("content_items")
        if not isinstance(items, list):
            return []
        return [item for item in items if isinstance(item, dict) and item.get("type") == "file"]

    @property
    def submission_type(self) -> str:
        if self.file_items:
            return "online_upload"
        chosen = self.extension.get("submission_type")
        return chosen if isinstance(chosen, str) and chosen else "external_tool"

    @property
    def is_new_submission(self) -> bool:
        return (
            parse_flag(self.extension.get("new_submission")) is not False
            and self.submission_type != "none"
        )

    def flag(self, name: str) -> bool:
        return parse_flag(self.extension.get(name)) is True

    def raw_submitted_at(self, *, top_level_allowed: bool) -> object:
        submission = self.params.get("submission")
        if isinstance(submission, dict) and submission.get("submittedAt") is not None:
            return submission["submittedAt"]
        if top_level_allowed and self.params.get("submittedAt") is not None:
            return self.params["submittedAt"]
        return self.extension.get("submitted_at")


@dataclass(frozen=True)
class ScoreOutcome:
    line_item: LineItem
    result: Result
    file_items: list[dict[str, Any]]


def scorable_line_item(state: SandboxState, ctx: AgsContext, line_item_id: str) -> LineItem:
    """Step 8: an active line item of an active assignment in this course, else 404 B."""
    line_item = state.line_items.get(line_item_id)
    if line_item is None or not line_item.active or line_item.course_id != ctx.course.id:
        raise NotFound()
    if state.assignments[line_item.assignment_id].deleted:
        raise NotFound()
    return line_item


def post_score(
    state: SandboxState, ctx: AgsContext, line_item_id: str, params: dict[str, Any]
) -> ScoreOutcome:
    """Validate and apply one score post; call with `state.lock` held."""
    line_item = scorable_line_item(state, ctx, line_item_id)
    link_id = params.get("resourceLinkId")
    if link_id is not None and link_id != line_item.resource_link_id:
        raise LtiServiceError("The specified LTI link ID is not associated with the line item.")
    user = state.find_student(ctx.course, params.get("userId", params.get("user_id")))
    if user is None:
        raise LtiServiceError("User not found in course or is not a student", 422)
    score = ScoreRequest(params)
    for name in ("activityProgress", "gradingProgress", "timestamp"):
        if score.text(name) is None:
            raise ParamMissing(name)
    timestamp = _checked_timestamp(state, line_item, user, score)
    if not score.is_reset:
        _check_score_numbers(score, line_item)
    submitted_at = _checked_submitted_at(state, score)
    file_items = score.file_items
    if score.submission_type == "online_upload" and not file_items:
        raise LtiServiceError(
            "Content items must be provided with submission type 'online_upload'", 422
        )
    assignment = state.assignments[line_item.assignment_id]
    primary = state.primary_line_item(assignment.id)
    grades = primary is not None and primary.id == line_item.id
    submission = state.submission_for(assignment.id, user.id) if grades else None
    if submission is not None and score.is_new_submission:
        _check_attempts_left(assignment, submission)
        _submit(submission, score, submitted_at or state.clock(), file_items)
    _validate_model(score)
    if submission is not None:
        _grade(state, ctx, assignment, line_item, submission, score)
        comment = score.text("comment")
        if comment is not None:
            submission.comments.append(
                Comment(comment, COMMENT_AUTHOR, state.clock(), submission.attempt)
            )
    result = _store_result(state, line_item, user, score, timestamp)
    return ScoreOutcome(line_item=line_item, result=result, file_items=file_items)


def _checked_timestamp(
    state: SandboxState, line_item: LineItem, user: User, score: ScoreRequest
) -> datetime:
    raw = score.text("timestamp") or ""
    timestamp = parse_time(raw, strict=state.flags.enforce_iso8601_for_lti_scores)
    if timestamp is None:
        raise LtiServiceError(f"Provided timestamp of {raw} not a valid timestamp", 400)
    existing = state.result_of(line_item.id, user.id)
    if state.flags.whole_second_timestamps:
        # Moodle's gradebook keeps whole seconds and refuses a grade that is not newer.
        timestamp = timestamp.replace(microsecond=0)
        if existing is not None and existing.updated_at >= timestamp:
            raise LtiServiceError("Refusing score with an earlier timestamp", 409)
    if existing is not None and existing.updated_at > timestamp:
        raise LtiServiceError(
            f"Provided timestamp of {raw} before last updated timestamp of "
            f"{iso8601_ms(existing.updated_at)}",
            400,
        )
    return timestamp


def _check_score_numbers(score: ScoreRequest, line_item: LineItem) -> None:
    """Steps 12–13, skipped on a reset."""
    if score.score_given is not None and score.score_maximum is None:
        raise LtiServiceError("ScoreMaximum not supplied when ScoreGiven present.", 422)
    maximum = _as_compared(score.score_maximum)
    if maximum < 0:
        raise LtiServiceError("ScoreMaximum must be greater than or equal to 0", 422)
    if maximum == 0 and line_item.score_maximum != 0:
        raise LtiServiceError("cannot be zero if line item's maximum is not zero", 422)
    if _as_compared(score.score_given) < 0:
        raise LtiServiceError("ScoreGiven must be greater than or equal to 0", 422)


def _checked_submitted_at(state: SandboxState, score: ScoreRequest) -> datetime | None:
    raw = score.raw_submitted_at(top_level_allowed=not state.flags.remove_top_submitted_at)
    if raw is None:
        return None
    submitted_at = parse_time(raw, strict=False)
    if submitted_at is None:
        raise LtiServiceError(
            f"Provided submitted_at timestamp of {raw} not a valid timestamp", 400
        )
    if submitted_at > state.clock() + MAX_SUBMITTED_AT_SKEW:
        raise LtiServiceError(f"Provided submitted_at timestamp of {raw} in the future", 400)
    return submitted_at


def _check_attempts_left(assignment: Assignment, submission: Submission) -> None:
    limit = assignment.allowed_attempts
    if limit is not None and limit > 0 and submission.attempt >= limit:
        raise LtiServiceError(
            "The maximum number of allowed attempts has been reached for this submission", 422
        )


def _submit(
    submission: Submission,
    score: ScoreRequest,
    submitted_at: datetime,
    file_items: list[dict[str, Any]],
) -> None:
    """Canvas's submit_homework: a new attempt with the submission's type and data."""
    submission_type = score.submission_type
    data = score.extension.get("submission_data")
    data_text = data if isinstance(data, str) else None
    submission.attempt += 1
    submission.submission_type = submission_type
    submission.url = data_text if submission_type in ("basic_lti_launch", "online_url") else None
    submission.body = data_text if submission_type == "online_text_entry" else None
    submission.submitted_at = submitted_at
    submission.history.append(
        AttemptRecord(
            attempt=submission.attempt,
            submission_type=submission_type,
            url=submission.url,
            body=submission.body,
            submitted_at=submitted_at,
            content_items=list(file_items),
        )
    )


def _validate_model(score: ScoreRequest) -> None:
    """The Result model's validations (422 shape B), run after the attempt was made."""
    errors: list[FieldError] = []
    if score.params.get("activityProgress") not in ACTIVITY_PROGRESS_VALUES:
        errors.append(FieldError("activity_progress", "is not included in the list", "inclusion"))
    if score.params.get("gradingProgress") not in GRADING_PROGRESS_VALUES:
        errors.append(FieldError("grading_progress", "is not included in the list", "inclusion"))
    if score.score_given is INVALID:
        errors.append(FieldError("result_score", "is not a number", "not_a_number"))
    if score.score_maximum is INVALID:
        errors.append(FieldError("result_maximum", "is not a number", "not_a_number"))
    elif score.score_given is not None and score.score_maximum is None:
        errors.append(FieldError("result_maximum", "can't be blank", "blank"))
    if errors:
        raise ValidationFailed(*errors)


def _grade(
    state: SandboxState,
    ctx: AgsContext,
    assignment: Assignment,
    line_item: LineItem,
    submission: Submission,
    score: ScoreRequest,
) -> None:
    """§3.4: reset, preserve, prioritize the teacher's grade, or grade with scaling."""
    if score.flag("preserve_score"):
        return
    if score.is_reset:
        submission.score = None
        submission.grade = None
        submission.graded_at = None
        submission.needs_review = False
        return
    if score.flag("prioritize_non_tool_grade") and submission.score is not None:
        return
    given = score.score_given
    maximum = score.score_maximum
    assert isinstance(given, Decimal) and isinstance(maximum, Decimal)
    if assignment.grading_type is GradingType.PASS_FAIL:
        passed = given > 0
        submission.score = assignment.points_possible if passed else Decimal(0)
        submission.grade = "complete" if passed else "incomplete"
    else:
        submission.score = canvas_score(given, maximum, line_item.score_maximum)
        submission.grade = decimal_text(submission.score)
    submission.grader = f"tool:{ctx.key.client_id}"
    submission.graded_at = state.clock()
    submission.needs_review = score.params.get("gradingProgress") == "PendingManual"


def _store_result(
    state: SandboxState, line_item: LineItem, user: User, score: ScoreRequest, timestamp: datetime
) -> Result:
    activity = str(score.params["activityProgress"])
    grading = str(score.params["gradingProgress"])
    result = state.result_of(line_item.id, user.id)
    if result is None:
        result = state.new_result(
            line_item, user, timestamp=timestamp, activity=activity, grading=grading
        )
    given, maximum = score.score_given, score.score_maximum
    result.score_given = given if isinstance(given, Decimal) else None
    result.score_maximum = maximum if isinstance(maximum, Decimal) else None
    result.activity_progress = activity
    result.grading_progress = grading
    result.updated_at = timestamp
    comment = score.text("comment")
    if comment is not None:
        result.comment = comment
    if score.extension:
        result.extension = dict(score.extension)
    return result
