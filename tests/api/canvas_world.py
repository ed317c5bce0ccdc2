"""A Canvas world for intake tests: a sandbox course registered with the service, and
students launching from it (real id_tokens over loopback, verified against the sandbox JWKS).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import httpx

from app.api.openapi import SUBMISSION_EVENT_EXAMPLE
from tests.support.auth import ADMIN_KEY, EVENTS_KEY, bearer
from tests.support.sandbox import RunningSandbox

ADMIN = bearer(ADMIN_KEY)
EVENTS = bearer(EVENTS_KEY)
FORMATIVE_ID = "fm-42"
CLASS_ID = "c-3"


SUBMITTED_EVENT: dict[str, Any] = {
    **copy.deepcopy(SUBMISSION_EVENT_EXAMPLE),
    "student": {**SUBMISSION_EVENT_EXAMPLE["student"], "id": "s-1"},
}
"""The SPEC's example event (the one the OpenAPI document shows), from the world's first
student."""


DROP = object()
"""As a value in `event(...)`: leave the field out."""


def event(**changes: Any) -> dict[str, Any]:
    """The SPEC's example event with top-level fields changed (dotted keys reach nested ones)."""
    body = copy.deepcopy(SUBMITTED_EVENT)
    for name, value in changes.items():
        target = body
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target[parent]
        if value is DROP:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return body


@dataclass(frozen=True)
class CanvasWorld:
    """A sandbox course with the tool, an assignment, students, and our registration of it."""

    scenario: dict[str, Any]
    platform: dict[str, Any]

    @property
    def course_id(self) -> str:
        return str(self.scenario["course_id"])

    @property
    def assignment_id(self) -> str:
        return str(self.scenario["assignment_id"])

    @property
    def line_item_url(self) -> str:
        return str(self.scenario["line_item_url"])

    def lti_id(self, student: int = 0) -> str:
        return str(self.scenario["students"][student]["lti_id"])

    def registration(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "issuer": self.scenario["issuer"],
            "client_id": self.scenario["client_id"],
            "deployment_ids": [self.scenario["deployment_id"]],
            "token_url": self.scenario["token_url"],
            "jwks_url": self.scenario["jwks_url"],
            "allowed_hosts": ["127.0.0.1"],
            "label": "Sandbox Canvas",
        }
        body.update(overrides)
        return body


async def canvas_world(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    *,
    register: bool = True,
    registration: dict[str, Any] | None = None,
    **scenario: Any,
) -> CanvasWorld:
    """Seed the sandbox (`scenario` fields: tool_jwk or tool_jwks_url, points, students, …)
    and register it with the service, as an operator would."""
    seeded = await sandbox.admin.scenario(**scenario)
    world = CanvasWorld(seeded, {})
    if not register:
        return world
    response = await client.post(
        "/v1/platforms", json=world.registration(**(registration or {})), headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return CanvasWorld(seeded, response.json())


async def id_token(
    sandbox: RunningSandbox,
    world: CanvasWorld,
    student: int = 0,
    *,
    from_assignment: bool = True,
    **fields: Any,
) -> str:
    """The id_token Canvas posts when the student opens the tool (from the assignment, or
    from the course navigation)."""
    if from_assignment:
        fields.setdefault("assignment_id", world.assignment_id)
    issued = await sandbox.admin.launch(world.course_id, world.lti_id(student), **fields)
    return str(issued["id_token"])


async def post_launch(
    client: httpx.AsyncClient,
    token: str,
    *,
    student_id: str = "s-1",
    formative_id: str = FORMATIVE_ID,
    class_id: str = CLASS_ID,
) -> httpx.Response:
    """What Formative's backend sends after receiving the launch."""
    body = {
        "id_token": token,
        "formative_id": formative_id,
        "student_id": student_id,
        "class_id": class_id,
    }
    return await client.post("/v1/launches", json=body, headers=EVENTS)


async def launch_from_canvas(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    world: CanvasWorld,
    student: int = 0,
    *,
    student_id: str = "s-1",
    formative_id: str = FORMATIVE_ID,
    from_assignment: bool = True,
) -> dict[str, Any]:
    """A student opens the formative from Canvas; returns the kept binding."""
    token = await id_token(sandbox, world, student, from_assignment=from_assignment)
    response = await post_launch(client, token, student_id=student_id, formative_id=formative_id)
    assert response.status_code == 201, response.text
    binding: dict[str, Any] = response.json()
    return binding
