"""The AGS authorization ladder: canvas-ags.md §3.1 steps 1–7, in Canvas's order.

Token → developer key → scope → course (and the key's account binding) → deleted course →
tool installed → concluded course. Each failure raises the exact Canvas error.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from starlette.requests import Request

from app.sandbox.access_tokens import AccessToken, verify_access_token
from app.sandbox.errors import LtiServiceError, NotFound
from app.sandbox.models import Course, CourseState, DeveloperKey
from app.sandbox.state import SandboxState
from app.sandbox.urls import request_origin, token_url

CONCLUDED_MESSAGE = (
    "This course has concluded. AGS requests will no longer be accepted for this course."
)


@dataclass(frozen=True)
class AgsContext:
    """Who is calling (developer key, token) and in which course, once authorized."""

    key: DeveloperKey
    course: Course
    token: AccessToken


def accepted_audiences(state: SandboxState, request: Request) -> frozenset[str]:
    """Token URLs an access token's ``aud`` may name on this request."""
    scheme = request.url.scheme
    audiences = {token_url(request_origin(request))}
    audiences.update(token_url(f"{scheme}://{host}") for host in state.config.universal_token_hosts)
    if state.config.base_url:
        audiences.add(token_url(state.config.base_url.rstrip("/")))
    return frozenset(audiences)


def authorize(
    state: SandboxState,
    request: Request,
    *,
    token: str | None,
    course_id: str,
    any_of_scopes: Collection[str],
) -> AgsContext:
    """Run the ladder; call with `state.lock` held."""
    access = verify_access_token(state, token, accepted_audiences(state, request))
    key = state.developer_keys.get(access.client_id)
    if key is None or not key.active:
        raise LtiServiceError("Unknown or inactive Developer Key", 401)
    if not access.scopes.intersection(any_of_scopes):
        raise LtiServiceError("Insufficient permissions", 401)
    course = state.courses.get(course_id)
    concluded_hides = not state.flags.improved_concluded_response_codes
    if course is None or (concluded_hides and course.state is CourseState.CONCLUDED):
        raise NotFound()
    if not key.enabled_in_account:
        raise LtiServiceError("Invalid Developer Key", 401)
    if course.state is CourseState.DELETED:
        raise LtiServiceError("Context is deleted or not found", 404)
    if key.client_id not in course.tools:
        raise LtiServiceError("Access Token not linked to a Tool associated with this Context", 401)
    if course.state is CourseState.CONCLUDED:
        raise LtiServiceError(CONCLUDED_MESSAGE, 422)
    return AgsContext(key=key, course=course, token=access)
