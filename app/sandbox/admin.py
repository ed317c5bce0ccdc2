"""Admin API under ``/sandbox/admin``: seed the world, switch faults and knobs, read the log.

For tests, benchmarks and demos only: no authentication. Every route is a thin wrapper over
a `SandboxState` method (the same API in-process tests call directly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from app.sandbox.config import CanvasFlags
from app.sandbox.fault_rules import FaultRule, FaultSettings
from app.sandbox.launch import Forgery, LaunchRequest, issue_launch
from app.sandbox.models import CourseState, EnrollmentState, GradingType
from app.sandbox.protocol import AGS_SCOPES, ROLE_LEARNER, ROLE_STUDENT
from app.sandbox.seed import seed_scenario
from app.sandbox.state import SandboxState, UnknownRecord
from app.sandbox.urls import request_origin
from app.sandbox.views import (
    assignment_view,
    course_view,
    key_view,
    platform_view,
    student_view,
    submission_view,
)


@contextmanager
def admin_errors() -> Iterator[None]:
    """Unknown records → 404, impossible requests → 422 (plain FastAPI errors)."""
    try:
        yield
    except UnknownRecord as exc:
        raise HTTPException(404, f"unknown {exc}") from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


class DeveloperKeyIn(BaseModel):
    client_id: str | None = None
    name: str = "Formative"
    scopes: list[str] = Field(default_factory=lambda: list(AGS_SCOPES))
    public_jwk: dict[str, Any] | None = Field(
        default=None, description="The tool's key inline: one JWK, or a JWKS {keys: [...]}."
    )
    public_jwk_url: str | None = Field(default=None, description="The tool's JWKS URL.")
    active: bool = True
    enabled_in_account: bool = True


class DeveloperKeyPatch(BaseModel):
    active: bool | None = None
    enabled_in_account: bool | None = None
    scopes: list[str] | None = None
    public_jwk: dict[str, Any] | None = None
    public_jwk_url: str | None = None


class CourseIn(BaseModel):
    course_id: str | None = None
    name: str | None = None
    state: CourseState = CourseState.AVAILABLE
    tools: list[str] = Field(default_factory=list, description="client_ids to install.")


class CoursePatch(BaseModel):
    state: CourseState


class ToolInstallIn(BaseModel):
    client_id: str
    deployment_id: str | None = None


class AssignmentIn(BaseModel):
    name: str = "Assignment"
    points: Decimal = Decimal(10)
    client_id: str | None = None
    allowed_attempts: int | None = None
    grading_type: GradingType = GradingType.POINTS
    launch_url: str | None = None
    assignment_id: str | None = None


class AssignmentPatch(BaseModel):
    points: Decimal | None = None
    allowed_attempts: int | None = Field(default=None, description="Sent as null: unlimited.")


class StudentIn(BaseModel):
    name: str | None = None
    lti_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    enrollment_state: EnrollmentState = EnrollmentState.ACTIVE


class EnrollmentPatch(BaseModel):
    enrollment_state: EnrollmentState


class TeacherGradeIn(BaseModel):
    score: Decimal | None


class ScenarioIn(BaseModel):
    tool_jwks_url: str | None = None
    tool_jwk: dict[str, Any] | None = None
    client_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: list(AGS_SCOPES))
    points: Decimal = Decimal(10)
    allowed_attempts: int | None = None
    students: int | list[str] = 3
    course_name: str | None = None
    assignment_name: str = "Fractions quiz"
    launch_url: str | None = None


class LaunchIn(BaseModel):
    course_id: str
    user: str = Field(description="The student's Canvas id or LTI id.")
    assignment_id: str | None = Field(default=None, description="Omit: a course-nav launch.")
    client_id: str | None = None
    nonce: str | None = None
    target_link_uri: str | None = None
    roles: list[str] = Field(default_factory=lambda: [ROLE_STUDENT, ROLE_LEARNER])
    forge: Forgery | None = None


class ThrottlePatch(BaseModel):
    enabled: bool | None = None
    high_water: float | None = None
    maximum: float | None = None
    leak_per_second: float | None = None
    up_front_cost: float | None = None
    request_cost: float | None = None
    token_extra_cost: float | None = None


class BucketFill(BaseModel):
    key: str = Field(description="e.g. lti_advantage:<client_id>-<cluster> or ip:127.0.0.1")
    count: float


class FlagsPatch(BaseModel):
    improved_concluded_response_codes: bool | None = None
    enforce_iso8601_for_lti_scores: bool | None = None
    remove_top_submitted_at: bool | None = None
    whole_second_timestamps: bool | None = None


def build_admin_router(state: SandboxState) -> APIRouter:
    router = APIRouter(prefix="/sandbox/admin", tags=["admin"])

    @router.get("/platform", summary="Issuer, token URL and JWKS URL of this platform")
    async def platform(request: Request) -> dict[str, Any]:
        return platform_view(state, request_origin(request))

    @router.post("/reset", summary="Forget every record, fault, bucket and logged request")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    @router.post("/scenario", status_code=201, summary="Key, course, assignment, students")
    async def scenario(body: ScenarioIn, request: Request) -> dict[str, Any]:
        with admin_errors():
            seeded = seed_scenario(state, **body.model_dump())
        origin = request_origin(request)
        with state.lock:
            assignment = state.assignment(seeded.assignment_id)
            return {
                **asdict(seeded),
                **platform_view(state, origin),
                "assignment": assignment_view(state, assignment, origin),
            }

    @router.post("/developer-keys", status_code=201, summary="Create a developer key")
    async def create_key(body: DeveloperKeyIn) -> dict[str, Any]:
        with admin_errors():
            return key_view(state.create_developer_key(**body.model_dump()))

    @router.get("/developer-keys/{client_id}", summary="A developer key and its token count")
    async def read_key(client_id: str) -> dict[str, Any]:
        with admin_errors():
            return key_view(state.developer_key(client_id))

    @router.patch("/developer-keys/{client_id}", summary="Switch a key on/off, change scopes")
    async def patch_key(client_id: str, body: DeveloperKeyPatch) -> dict[str, Any]:
        with admin_errors():
            return key_view(state.update_developer_key(client_id, **body.model_dump()))

    @router.post("/courses", status_code=201, summary="Create a course")
    async def create_course(body: CourseIn, request: Request) -> dict[str, Any]:
        with admin_errors():
            course = state.create_course(**body.model_dump())
        return course_view(course, request_origin(request))

    @router.get("/courses/{course_id}", summary="A course")
    async def read_course(course_id: str, request: Request) -> dict[str, Any]:
        with admin_errors():
            return course_view(state.course(course_id), request_origin(request))

    @router.patch("/courses/{course_id}", summary="Publish, conclude, delete or reopen")
    async def patch_course(course_id: str, body: CoursePatch, request: Request) -> dict[str, Any]:
        with admin_errors():
            course = state.set_course_state(course_id, body.state)
        return course_view(course, request_origin(request))

    @router.post("/courses/{course_id}/tools", status_code=201, summary="Install a tool")
    async def install_tool(course_id: str, body: ToolInstallIn) -> dict[str, str]:
        with admin_errors():
            install = state.install_tool(
                course_id, body.client_id, deployment_id=body.deployment_id
            )
        return {"client_id": install.client_id, "deployment_id": install.deployment_id}

    @router.delete("/courses/{course_id}/tools/{client_id}", status_code=204)
    async def uninstall_tool(course_id: str, client_id: str) -> None:
        with admin_errors():
            state.uninstall_tool(course_id, client_id)

    @router.post("/courses/{course_id}/assignments", status_code=201)
    async def create_assignment(
        course_id: str, body: AssignmentIn, request: Request
    ) -> dict[str, Any]:
        """An external-tool assignment with its coupled primary line item."""
        with admin_errors(), state.lock:
            assignment = state.create_assignment(course_id, **body.model_dump())
            return assignment_view(state, assignment, request_origin(request))

    @router.patch("/assignments/{assignment_id}", summary="Change points or attempt limit")
    async def patch_assignment(
        assignment_id: str, body: AssignmentPatch, request: Request
    ) -> dict[str, Any]:
        with admin_errors(), state.lock:
            if body.points is not None:
                state.set_assignment_points(assignment_id, body.points)
            if "allowed_attempts" in body.model_fields_set:
                state.set_allowed_attempts(assignment_id, body.allowed_attempts)
            assignment = state.assignment(assignment_id)
            return assignment_view(state, assignment, request_origin(request))

    @router.delete("/assignments/{assignment_id}", status_code=204)
    async def delete_assignment(assignment_id: str, keep_line_items: bool = False) -> None:
        with admin_errors():
            state.delete_assignment(assignment_id, keep_line_items=keep_line_items)

    @router.post("/courses/{course_id}/students", status_code=201, summary="Enrol a student")
    async def create_student(course_id: str, body: StudentIn) -> dict[str, Any]:
        with admin_errors(), state.lock:
            user = state.create_student(course_id, **body.model_dump())
            return student_view(user, state.enrollments[(course_id, user.id)])

    @router.patch("/courses/{course_id}/students/{user}", summary="Change an enrolment")
    async def patch_student(course_id: str, user: str, body: EnrollmentPatch) -> dict[str, Any]:
        with admin_errors(), state.lock:
            enrollment = state.set_enrollment_state(course_id, user, body.enrollment_state)
            return student_view(state.users[enrollment.user_id], enrollment)

    @router.get("/assignments/{assignment_id}/submissions/{user}", summary="One gradebook cell")
    async def read_submission(assignment_id: str, user: str) -> dict[str, Any]:
        with admin_errors(), state.lock:
            state.assignment(assignment_id)
            return submission_view(state.submission(assignment_id, user))

    @router.put("/assignments/{assignment_id}/grades/{user}", summary="Grade as a teacher")
    async def teacher_grade(assignment_id: str, user: str, body: TeacherGradeIn) -> dict[str, Any]:
        with admin_errors(), state.lock:
            state.assignment(assignment_id)
            return submission_view(state.grade_as_teacher(assignment_id, user, body.score))

    @router.post("/launches", status_code=201, summary="Issue a (possibly forged) id_token")
    async def launch(body: LaunchIn, request: Request) -> dict[str, Any]:
        fields = body.model_dump()
        fields["roles"] = tuple(body.roles)
        with admin_errors():
            issued = issue_launch(state, request_origin(request), LaunchRequest(**fields))
        return {"id_token": issued.id_token, "claims": issued.claims}

    @router.get("/faults", summary="Current base latency and fault rules")
    async def read_faults() -> FaultSettings:
        return state.faults.snapshot()

    @router.put("/faults", summary="Replace the faults of this run")
    async def put_faults(body: FaultSettings) -> FaultSettings:
        state.faults.configure(body)
        return state.faults.snapshot()

    @router.post("/faults/rules", status_code=201, summary="Append one fault rule")
    async def add_fault(body: FaultRule) -> FaultSettings:
        state.faults.add_rule(body)
        return state.faults.snapshot()

    @router.delete("/faults", status_code=204, summary="No latency, no faults")
    async def clear_faults() -> None:
        state.faults.clear()

    @router.get("/throttle", summary="Throttle settings and each bucket's level")
    async def read_throttle() -> dict[str, Any]:
        return {"settings": asdict(state.throttle.settings), "buckets": state.throttle.levels()}

    @router.patch("/throttle", summary="Change throttle numbers (or switch it off)")
    async def patch_throttle(body: ThrottlePatch) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True)
        state.throttle.configure(replace(state.throttle.settings, **changes))
        return {"settings": asdict(state.throttle.settings), "buckets": state.throttle.levels()}

    @router.post("/throttle/buckets", summary="Set a bucket's level (stage a storm)")
    async def fill_bucket(body: BucketFill) -> dict[str, float]:
        state.throttle.fill(body.key, body.count)
        return state.throttle.levels()

    @router.get("/hosts", summary="The Canvas hosts played: port → database cluster")
    async def read_hosts() -> dict[str, str]:
        return {str(port): cluster for port, cluster in sorted(state.clusters.items())}

    @router.get("/flags", summary="Canvas feature flags")
    async def read_flags() -> dict[str, bool]:
        return asdict(state.flags)

    @router.patch("/flags", summary="Switch Canvas feature flags")
    async def patch_flags(body: FlagsPatch) -> dict[str, bool]:
        flags: CanvasFlags = replace(state.flags, **body.model_dump(exclude_none=True))
        state.set_flags(flags)
        return asdict(state.flags)

    @router.get("/developer-keys/{client_id}/token-grants", summary="Tokens granted to a key")
    async def token_grants(client_id: str) -> dict[str, Any]:
        with admin_errors(), state.lock:
            key = state.developer_key(client_id)
            return {
                "client_id": client_id,
                "count": key.token_grants,
                "times": [moment.isoformat() for moment in key.token_grant_times],
            }

    @router.get("/requests", summary="Logged platform requests, oldest first")
    async def requests(
        path_contains: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        entries = state.request_log.entries(path_contains=path_contains, method=method)
        return [entry.as_json() for entry in entries]

    @router.delete("/requests", status_code=204, summary="Clear the request log")
    async def clear_requests() -> None:
        state.request_log.clear()

    return router
