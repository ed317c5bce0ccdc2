"""Launch intake: Formative's backend reports a student's Canvas launch into a formative."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.auth import EventsCaller
from app.api.deps import Context
from app.api.problems import ProblemError, problem_responses
from app.intake.launches import LaunchIn, LaunchOut, record_launch
from app.lti.launch import LaunchRejectedError, LaunchRejection

router = APIRouter(prefix="/v1/launches", tags=["launches"])
_STATUS = {LaunchRejection.platform_keys_unavailable: 503, LaunchRejection.id_token_reused: 409}
"""Refusals that are not a 422."""


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=LaunchOut,
    responses=problem_responses(400, 401, 403, 409, 422, 503),
    summary="Record a student's launch from Canvas",
    description="Verifies the LTI 1.3 id_token against the registered platform's keys "
    "(RS256 signature, issuer, audience, expiry, deployment) and keeps where the student's "
    "grade for the formative goes. A launch without a gradable AGS line item is kept and "
    "marked `not_a_canvas_assignment`. A refused token answers 422 with the reason as `code` "
    "(`invalid_id_token`, `unsupported_algorithm`, `unknown_platform`, `invalid_audience`, "
    "`platform_inactive`, `unknown_signing_key`, `invalid_signature`, `token_expired`, "
    "`token_not_yet_valid`, `unknown_deployment`, `lineitem_host_not_allowed`); 503 "
    "`platform_keys_unavailable` when the platform's keys cannot be fetched. One id_token "
    "(its `nonce` and `jti`, issuer and `sub`) binds one student: posted again for the same "
    "student it is recorded again; for another student it is a 409 `id_token_reused`.",
)
async def create_launch(body: LaunchIn, context: Context, _caller: EventsCaller) -> LaunchOut:
    try:
        launch = await record_launch(
            context.sessions,
            body,
            jwks=context.jwks,
            now=context.clock(),
            insecure_hosts=context.settings.insecure_hosts,
        )
    except LaunchRejectedError as exc:
        context.metrics.launch_recorded(str(exc.code))
        raise ProblemError(_STATUS.get(exc.code, 422), exc.code, str(exc)) from exc
    context.metrics.launch_recorded("gradable" if launch.gradable else "not_gradable")
    return launch
