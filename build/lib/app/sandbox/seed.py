"""Ready-made worlds: a course with a tool, an assignment and students, in one call.

`seed_scenario` is for tests; `seed_demo` is what ``passback serve --sandbox`` uses, and it
returns everything a platform registration of the service needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.sandbox.models import User
from app.sandbox.protocol import AGS_SCOPES
from app.sandbox.state import NumberLike, SandboxState
from app.sandbox.urls import line_item_url, line_items_url, platform_jwks_url, token_url

DEMO_STUDENTS = ("Ada Lovelace", "Grace Hopper", "Alan Turing")


@dataclass(frozen=True)
class StudentSeed:
    user_id: str
    lti_id: str
    name: str


@dataclass(frozen=True)
class Scenario:
    """The ids of one seeded world: a key, a course with the tool, an assignment, students."""

    client_id: str
    deployment_id: str
    course_id: str
    assignment_id: str
    line_item_id: str
    students: tuple[StudentSeed, ...]


def _seed(user: User) -> StudentSeed:
    return StudentSeed(user_id=user.id, lti_id=user.lti_id, name=user.name)


def seed_scenario(
    state: SandboxState,
    *,
    tool_jwks_url: str | None = None,
    tool_jwk: Mapping[str, Any] | None = None,
    client_id: str | None = None,
    scopes: Sequence[str] = AGS_SCOPES,
    points: NumberLike = 10,
    allowed_attempts: int | None = None,
    students: int | Sequence[str] = 3,
    course_name: str | None = None,
    assignment_name: str = "Fractions quiz",
    launch_url: str | None = None,
) -> Scenario:
    """Create a developer key (tool key at `tool_jwks_url` or inline `tool_jwk`), a published
    course with the tool installed, an assignment with its primary line item, and students
    (a count, or their names)."""
    names = (
        [f"Student {n}" for n in range(1, students + 1)]
        if isinstance(students, int)
        else list(students)
    )
    with state.lock:
        key = state.create_developer_key(
            client_id=client_id, scopes=scopes, public_jwk=tool_jwk, public_jwk_url=tool_jwks_url
        )
        course = state.create_course(name=course_name, tools=[key.client_id])
        assignment = state.create_assignment(
            course.id,
            name=assignment_name,
            points=points,
            client_id=key.client_id,
            allowed_attempts=allowed_attempts,
            launch_url=launch_url,
        )
        line_item = state.primary_line_item(assignment.id)
        assert line_item is not None
        users = [state.create_student(course.id, name=name) for name in names]
        return Scenario(
            client_id=key.client_id,
            deployment_id=course.tools[key.client_id].deployment_id,
            course_id=course.id,
            assignment_id=assignment.id,
            line_item_id=line_item.id,
            students=tuple(_seed(user) for user in users),
        )


@dataclass(frozen=True)
class DemoSeed:
    """A seeded demo world and what the service needs to register the platform."""

    base_url: str
    issuer: str
    client_id: str
    deployment_id: str
    token_url: str
    jwks_url: str
    allowed_host: str
    course_id: str
    assignment_id: str
    line_items_url: str
    line_item_url: str
    students: tuple[StudentSeed, ...]

    def platform_registration(self) -> dict[str, Any]:
        """A body for the service's ``POST /v1/platforms``."""
        return {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "deployment_ids": [self.deployment_id],
            "token_url": self.token_url,
            "jwks_url": self.jwks_url,
            "allowed_hosts": [self.allowed_host],
            "label": "Sandbox Canvas",
        }


def seed_demo(state: SandboxState, tool_jwks_url: str) -> DemoSeed:
    """Seed a demo course (assignment of 10 points, three students) whose developer key
    trusts the tool keys at `tool_jwks_url`. Needs `SandboxConfig.base_url`."""
    base_url = state.config.base_url
    if not base_url:
        raise ValueError("seed_demo needs SandboxConfig(base_url=...)")
    origin = base_url.rstrip("/")
    scenario = seed_scenario(
        state,
        tool_jwks_url=tool_jwks_url,
        points=10,
        students=DEMO_STUDENTS,
        course_name="Demo course",
        assignment_name="Fractions quiz",
    )
    return DemoSeed(
        base_url=origin,
        issuer=state.issuer,
        client_id=scenario.client_id,
        deployment_id=scenario.deployment_id,
        token_url=token_url(origin),
        jwks_url=platform_jwks_url(origin),
        allowed_host=urlsplit(origin).hostname or "",
        course_id=scenario.course_id,
        assignment_id=scenario.assignment_id,
        line_items_url=line_items_url(origin, scenario.course_id),
        line_item_url=line_item_url(origin, scenario.course_id, scenario.line_item_id),
        students=scenario.students,
    )
