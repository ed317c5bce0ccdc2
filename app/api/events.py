"""Submission events: Formative's backend reports what was scored; automatic passback is
decided and queued here.

The body is parsed by hand rather than by FastAPI so that scores keep every digit (JSON
numbers become Decimal, never float); the OpenAPI document still describes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.api.auth import BEARER_SECURITY, caller_with_scope
from app.api.problems import ProblemError, problem_responses
from app.context import AppContext
from app.intake.event_in import MalformedJsonError, SubmissionEventIn, parse_json_exactly
from app.intake.events import Decision, EventDecision, EventIdReusedError

router = APIRouter(prefix="/v1", tags=["events"])
JSON_MEDIA_TYPE = "application/json"


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its `$defs` written out in place (OpenAPI resolves
    `$ref` against the whole document, where `#/$defs` does not exist)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = definitions[node["$ref"].rsplit("/", 1)[-1]]
                rest = {key: value for key, value in node.items() if key != "$ref"}
                return resolve({**target, **rest})
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE or media_type.endswith("+json")


async def _parse(request: Request) -> SubmissionEventIn:
    if not _is_json(request.headers.get("content-type", "")):
        raise ProblemError(415, "unsupported_media_type", "send the event as application/json")
    try:
        document = parse_json_exactly(await request.body())
    except MalformedJsonError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": str(exc), "input": None}]
        ) from exc
    try:
        return SubmissionEventIn.model_validate(document)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from exc


@router.post(
    "/submission-events",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    responses={
        202: {"model": EventDecision, "description": "Recorded (and queued when eligible)."},
        200: {"model": EventDecision, "description": "A repeat: the first answer, unchanged."},
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON_MEDIA_TYPE: {"schema": _inline_schema(SubmissionEventIn)}},
        },
        **BEARER_SECURITY,
    },
    summary="Report a submission event",
    description="Records what Formative knows of the student's work and decides automatic "
    "passback (SPEC §2.1): `queued` with the job, or `not_eligible` with every reason. "
    "Idempotent on `event_id`: a repeat answers 200 with the first answer byte for byte; "
    "the same `event_id` with a different event is a 409 `event_id_reused`.",
)
async def submit_event(request: Request) -> Response:
    # No FastAPI dependencies on this hot path: their resolution cost more than the work.
    context: AppContext = request.app.state.context
    await caller_with_scope(request, context, "events")
    event = await _parse(request)
    try:
        answer = await context.events.receive(event)
    except EventIdReusedError as exc:
        raise ProblemError(
            409,
            "event_id_reused",
            f"event_id {event.event_id!r} was already used for a different event",
        ) from exc
    context.metrics.event_decided(answer.decision if answer.first_time else "repeat")
    if answer.first_time and answer.decision is Decision.queued:
        context.wakeup.notify()  # this instance's workers look for the new job at once
    return Response(
        answer.body,
        status_code=status.HTTP_202_ACCEPTED if answer.first_time else status.HTTP_200_OK,
        media_type=JSON_MEDIA_TYPE,
    )
