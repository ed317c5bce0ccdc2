"""Line items and results after authorization: canvas-ags.md §4.

Lookup rules (ownership 412, course match 404), create/update/delete with their assignment
side effects, filters, and the JSON Canvas's serializers emit (null fields dropped).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.sandbox.authorization import AgsContext
from app.sandbox.errors import (
    EmptyError,
    FieldError,
    LineItemBadRequest,
    LtiServiceError,
    NotFound,
    ValidationFailed,
)
from app.sandbox.models import Assignment, LineItem, Result
from app.sandbox.protocol import EXT_LAUNCH_URL, EXT_SUBMISSION, EXT_SUBMISSION_TYPE
from app.sandbox.protocol import LINE_ITEM_SUBMISSION_TYPES as ALLOWED_TYPES
from app.sandbox.rendering import compact_dict
from app.sandbox.scores import INVALID, parse_number
from app.sandbox.state import SandboxState
from app.sandbox.urls import line_item_url, result_url

NO_PERMISSION = "Tool does not have permission to view line_item"
FOREIGN_LINK = "Resource link id points to Tool not associated with this Context"
FILTERS = {"tag": "tag", "resource_id": "resource_id", "resource_link_id": "resource_link_id"}


def serialize_line_item(
    state: SandboxState, line_item: LineItem, origin: str, *, include_launch_url: bool = False
) -> dict[str, Any]:
    assignment = state.assignments[line_item.assignment_id]
    return compact_dict(
        {
            "id": line_item_url(origin, line_item.course_id, line_item.id),
            "scoreMaximum": line_item.score_maximum,
            "label": line_item.label,
            "resourceId": line_item.resource_id,
            "tag": line_item.tag,
            "resourceLinkId": line_item.resource_link_id,
            EXT_SUBMISSION_TYPE: line_item.submission_type_extension,
            EXT_LAUNCH_URL: assignment.launch_url if include_launch_url else None,
        }
    )


def serialize_result(
    state: SandboxState, line_item: LineItem, result: Result, origin: str
) -> dict[str, Any]:
    user = state.users[result.user_id]
    body = compact_dict(
        {
            "id": result_url(origin, line_item.course_id, line_item.id, result.id),
            "scoreOf": line_item_url(origin, line_item.course_id, line_item.id),
            "userId": user.lti_id,
            "resultScore": _result_score(state, line_item, result),
            "resultMaximum": result.score_maximum,
            "comment": result.comment,
        }
    )
    if result.extension:
        body[EXT_SUBMISSION] = result.extension
    return body


def _result_score(state: SandboxState, line_item: LineItem, result: Result) -> Decimal | None:
    """The stored scoreGiven, or a teacher's later grade rescaled to resultMaximum."""
    submission = state.submissions.get((line_item.assignment_id, result.user_id))
    assignment = state.assignments[line_item.assignment_id]
    primary = state.primary_line_item(assignment.id)
    regraded = (
        primary is not None
        and primary.id == line_item.id
        and submission is not None
        and submission.grader == "teacher"
        and submission.score is not None
        and result.score_maximum is not None
        and assignment.points_possible != 0
    )
    if regraded:
        assert submission is not None and submission.score is not None
        assert result.score_maximum is not None
        return submission.score * result.score_maximum / assignment.points_possible
    return result.score_given


def course_line_item(state: SandboxState, ctx: AgsContext, line_item_id: str) -> LineItem:
    """An active line item in this course (any tool's), else 404 B."""
    line_item = state.line_items.get(line_item_id)
    if line_item is None or not line_item.active or line_item.course_id != ctx.course.id:
        raise NotFound()
    return line_item


def owned_line_item(
    state: SandboxState, ctx: AgsContext, line_item_id: str, *, showing: bool = False
) -> LineItem:
    """A line item of this developer key: ownership (412) first, then the course (404 B).

    When `showing`, a line item whose assignment was deleted answers 404 with no body.
    """
    line_item = state.line_items.get(line_item_id)
    if line_item is None or not line_item.active:
        raise NotFound()
    if line_item.client_id != ctx.key.client_id:
        raise LtiServiceError(NO_PERMISSION)
    if line_item.course_id != ctx.course.id:
        raise NotFound()
    if state.assignments[line_item.assignment_id].deleted:
        if showing:
            raise EmptyError(404)
        raise NotFound()
    return line_item


def list_line_items(
    state: SandboxState, ctx: AgsContext, filters: dict[str, str]
) -> list[LineItem]:
    """This key's active line items of active assignments, filtered by exact matches."""
    found = []
    for line_item in state.line_items_of(ctx.course.id):
        assignment = state.assignments[line_item.assignment_id]
        if not line_item.active or assignment.deleted:
            continue
        if line_item.client_id != ctx.key.client_id:
            continue
        if any(
            name in filters and getattr(line_item, attribute) != filters[name]
            for name, attribute in FILTERS.items()
        ):
            continue
        found.append(line_item)
    return found


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _score_maximum_errors(value: object) -> list[FieldError]:
    number = parse_number(value)
    if number is None:
        return [FieldError("score_maximum", "can't be blank", "blank")]
    if number is INVALID:
        return [FieldError("score_maximum", "is not a number", "not_a_number")]
    assert isinstance(number, Decimal)
    if number < 0:
        return [
            FieldError(
                "score_maximum", "must be greater than or equal to 0", "greater_than_or_equal_to"
            )
        ]
    return []


def _optional_text(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    return None if value is None else str(value)


def create_line_item(state: SandboxState, ctx: AgsContext, params: dict[str, Any]) -> LineItem:
    """A new assignment with its line item, or (with resourceLinkId) an extra line item."""
    link_id = params.get("resourceLinkId")
    assignment = _linked_assignment(state, ctx, str(link_id)) if link_id is not None else None
    extension = params.get(EXT_SUBMISSION_TYPE)
    if assignment is None and isinstance(extension, dict):
        requested = extension.get("type")
        if requested not in ALLOWED_TYPES:
            raise LineItemBadRequest(f"Invalid submission_type for new assignment: {requested}")
    errors = []
    if _blank(params.get("label")):
        errors.append(FieldError("label", "can't be blank", "blank"))
    errors.extend(_score_maximum_errors(params.get("scoreMaximum")))
    if errors:
        raise ValidationFailed(*errors)
    score_maximum = parse_number(params["scoreMaximum"])
    assert isinstance(score_maximum, Decimal)
    label = str(params["label"])
    if assignment is None:
        tool_url = extension.get("external_tool_url") if isinstance(extension, dict) else None
        assignment = Assignment(
            id=state.next_id(),
            course_id=ctx.course.id,
            name=label,
            points_possible=score_maximum,
            client_id=ctx.key.client_id,
            resource_link_id=None,
            launch_url=tool_url if isinstance(tool_url, str) else None,
            unlock_at=_optional_text(params, "startDateTime"),
            due_at=_optional_text(params, "endDateTime"),
        )
        state.assignments[assignment.id] = assignment
    return state.add_line_item(
        assignment,
        label=label,
        client_id=ctx.key.client_id,
        coupled=False,
        score_maximum=score_maximum,
        resource_id=_optional_text(params, "resourceId"),
        tag=_optional_text(params, "tag"),
        resource_link_id=None if link_id is None else str(link_id),
        submission_type_extension=extension if isinstance(extension, dict) else None,
    )


def _linked_assignment(state: SandboxState, ctx: AgsContext, link_id: str) -> Assignment:
    assignment = next(
        (a for a in state.assignments.values() if a.resource_link_id == link_id), None
    )
    if assignment is None:
        raise NotFound()
    if assignment.client_id != ctx.key.client_id:
        raise LtiServiceError(FOREIGN_LINK, 422)
    if (
        assignment.course_id != ctx.course.id
        or assignment.deleted
        or state.primary_line_item(assignment.id) is None
    ):
        raise EmptyError(412)
    return assignment


def update_line_item(state: SandboxState, line_item: LineItem, params: dict[str, Any]) -> LineItem:
    """Change a line item; on the primary one, Canvas copies the change to the assignment."""
    errors = []
    if "label" in params and _blank(params["label"]):
        errors.append(FieldError("label", "can't be blank", "blank"))
    if "scoreMaximum" in params:
        errors.extend(_score_maximum_errors(params["scoreMaximum"]))
    if errors:
        raise ValidationFailed(*errors)
    assignment = state.assignments[line_item.assignment_id]
    primary = state.primary_line_item(assignment.id)
    is_primary = primary is not None and primary.id == line_item.id
    if "label" in params:
        line_item.label = str(params["label"])
        if is_primary:
            assignment.name = line_item.label
    if "scoreMaximum" in params:
        score_maximum = parse_number(params["scoreMaximum"])
        assert isinstance(score_maximum, Decimal)
        line_item.score_maximum = score_maximum
        if is_primary:
            assignment.points_possible = score_maximum
    if "resourceId" in params:
        line_item.resource_id = _optional_text(params, "resourceId")
    if "tag" in params:
        line_item.tag = _optional_text(params, "tag")
    if is_primary and "startDateTime" in params:
        assignment.unlock_at = _optional_text(params, "startDateTime")
    if is_primary and "endDateTime" in params:
        assignment.due_at = _optional_text(params, "endDateTime")
    return line_item


def delete_line_item(state: SandboxState, line_item: LineItem) -> None:
    """Coupled → 401 empty; primary → the whole assignment goes; extra → just this one."""
    if line_item.coupled:
        raise EmptyError(401)
    primary = state.primary_line_item(line_item.assignment_id)
    if primary is not None and primary.id == line_item.id:
        state.delete_assignment(line_item.assignment_id)
    else:
        line_item.active = False
