"""Assertions about Canvas's answers and builders of AGS requests, for the sandbox's tests."""

from __future__ import annotations

from typing import Any

import httpx

from app.sandbox import Scenario
from app.sandbox.models import Assignment, LineItem
from app.sandbox.protocol import EXT_SUBMISSION, MEDIA_SCORE
from tests.support.sandbox import RunningSandbox

TIMESTAMP = "2026-11-20T14:03:11.250Z"


def media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip()


def assert_shape_a(response: httpx.Response, status: int, symbol: str, message: str) -> None:
    """Canvas's LtiServices error: ``{"errors": {"type", "message"}}``, application/json."""
    assert response.status_code == status, response.text
    assert media_type(response) == "application/json"
    assert response.json() == {"errors": {"type": symbol, "message": message}}


def assert_shape_b(response: httpx.Response, status: int, message: str) -> None:
    """Canvas's generic API error: ``{"errors": [{"message"}]}``, application/json."""
    assert response.status_code == status, response.text
    assert media_type(response) == "application/json"
    assert response.json() == {"errors": [{"message": message}]}


def assert_not_found(response: httpx.Response) -> None:
    assert_shape_b(response, 404, "The specified resource does not exist.")


def assert_empty(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.content == b""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def line_item_url(sandbox: RunningSandbox, world: Scenario, line_item_id: str | None = None) -> str:
    item = line_item_id or world.line_item_id
    return sandbox.url(f"/api/lti/courses/{world.course_id}/line_items/{item}")


def score(
    user_id: str,
    score_given: Any = 7,
    score_maximum: Any = 10,
    *,
    timestamp: str = TIMESTAMP,
    extension: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A FullyGraded/Completed score; None values are left out."""
    body: dict[str, Any] = {
        "userId": user_id,
        "scoreGiven": score_given,
        "scoreMaximum": score_maximum,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": timestamp,
        **fields,
    }
    if extension is not None:
        body[EXT_SUBMISSION] = extension
    return {name: value for name, value in body.items() if value is not None}


async def post_score(
    http: httpx.AsyncClient,
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    body: dict[str, Any],
    *,
    line_item_id: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    return await http.post(
        f"{line_item_url(sandbox, world, line_item_id)}/scores",
        json=body,
        headers={**bearer(token), "Content-Type": MEDIA_SCORE},
        **kwargs,
    )


def foreign_assignment(sandbox: RunningSandbox, world: Scenario) -> tuple[Assignment, LineItem]:
    """An assignment in the world's course owned by another tool, and its primary line item."""
    other_key = sandbox.state.create_developer_key()
    sandbox.state.install_tool(world.course_id, other_key.client_id)
    assignment = sandbox.state.create_assignment(world.course_id, client_id=other_key.client_id)
    primary = sandbox.state.primary_line_item(assignment.id)
    assert primary is not None
    return assignment, primary
