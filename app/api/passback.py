"""Manual passback routes: a teacher previews, sends and follows grades going to Canvas."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from app.api.auth import (
    AuthenticatedCaller,
    EventsCaller,
    Teacher,
    TeacherActor,
    teacher_actor,
)
from app.api.deps import Context, Session
from app.api.problems import ProblemError, problem_responses
from app.intake.formatives import FormativeOut, FormativePut, put_formative
from app.intake.schemas import FormativeId
from app.manual.batches import BatchOut, batch_view
from app.manual.common import ManualPassbackError, authorize_teacher
from app.manual.preview import Preview, build_preview, canvas_line_item_reader
from app.manual.send import SendAnswer, Sender, SendRequest, send
from app.store import passback as store
from app.store.models import PassbackMode

router = APIRouter(tags=["manual passback"])

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def problem(exc: ManualPassbackError) -> ProblemError:
    return ProblemError(exc.status, exc.code, exc.detail)


@router.put(
    "/v1/formatives/{formative_id}",
    response_model=FormativeOut,
    responses=problem_responses(401, 403, 413, 422),
    tags=["formatives"],
    operation_id="putFormative",
    summary="Tell the service about a formative",
    description="What Formative knows of the formative before (or besides) events: its "
    "title, teachers, organization and license, and its classes with their students' names. "
    "Idempotent: the formative's facts are upserted and its classes and students replaced by "
    "those given. Events keep updating what they carry. A teacher among `teacher_ids` can "
    "then preview the formative before any student launches (its students show as not "
    "launched). At most 500 classes, 5,000 students a class and 20,000 in all; a student is "
    "in one class; a body above the request size limit (PASSBACK_MAX_BODY_BYTES) is 413.",
)
async def save_formative(
    formative_id: Annotated[FormativeId, Path()],
    body: FormativePut,
    session: Session,
    _caller: EventsCaller,
) -> FormativeOut:
    return await put_formative(session, formative_id, body)


@router.get(
    "/v1/formatives/{formative_id}/passback/preview",
    response_model=Preview,
    responses=problem_responses(401, 403, 422),
    summary="Preview a manual passback",
    description="One row per student, grouped by class: the Formative score, percent, the "
    "Canvas points (read once per Canvas assignment), the Canvas score that would be sent in "
    "this mode, the last passback, and whether the row can be sent (or the reason code). "
    "Warnings name Canvas assignments worth 0 points and assignments no longer linked.",
)
async def preview(
    formative_id: str,
    context: Context,
    session: Session,
    actor: Teacher,
    mode: Annotated[PassbackMode, Query()] = PassbackMode.grades,
) -> Preview:
    try:
        formative = await authorize_teacher(session, formative_id, actor.teacher_id)
        return await build_preview(session, formative, mode, canvas_line_item_reader(context))
    except ManualPassbackError as exc:
        raise problem(exc) from exc


@router.post(
    "/v1/formatives/{formative_id}/passback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendAnswer,
    responses=problem_responses(400, 401, 403, 409, 422),
    summary="Send grades to Canvas",
    description="Queues one job per selected student who can be sent (the rest are listed in "
    "`skipped` with a reason) and records the batch with who sent it. Overrides change only "
    "what goes to Canvas. The score timestamp is the moment of sending. With an "
    "`Idempotency-Key`, repeating the same request answers the same batch; the same key with "
    "a different request is refused (422 `idempotency_key_reused`). Without one, a newer send "
    "supersedes the older still-pending jobs of the same students.",
)
async def send_grades(
    formative_id: str,
    body: SendRequest,
    response: Response,
    context: Context,
    session: Session,
    actor: Teacher,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> SendAnswer:
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ProblemError(
            422,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        )
    try:
        formative = await authorize_teacher(session, formative_id, actor.teacher_id)
        assert actor.teacher_id is not None
        result = await send(
            session,
            formative,
            body,
            sender=Sender(teacher_id=actor.teacher_id, via=actor.caller.label),
            idempotency_key=idempotency_key,
            now=context.clock(),
            deadline=timedelta(seconds=context.settings.delivery_deadline_seconds),
        )
    except ManualPassbackError as exc:
        raise problem(exc) from exc
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    elif result.answer.jobs:
        context.wakeup.notify()
    return result.answer


async def _teacher_or_admin(request: Request, caller: AuthenticatedCaller) -> TeacherActor:
    if caller.kind == "api_key" and "admin" in caller.scopes:
        return TeacherActor(None, caller)
    return await teacher_actor(request, caller)


TeacherOrAdmin = Annotated[TeacherActor, Depends(_teacher_or_admin)]


@router.get(
    "/v1/passback/batches/{batch_id}",
    response_model=BatchOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Follow a batch",
    description="Counts by status and each student's outcome: the failure or skip reason code, "
    "what the teacher should know, and the platform's own message. A teacher sees only "
    "batches of their formatives (403 otherwise, whether or not the batch exists).",
)
async def read_batch(batch_id: str, session: Session, actor: TeacherOrAdmin) -> BatchOut:
    batch = await store.get_batch(session, batch_id)
    if not actor.is_admin:
        formative = await store.get_formative(session, batch.formative_id) if batch else None
        if batch is None or formative is None or actor.teacher_id not in formative.teacher_ids:
            raise ProblemError(
                403,
                "not_a_teacher_of_formative",
                "You are not a teacher of this batch's formative.",
            )
    if batch is None:
        raise ProblemError(404, "batch_not_found", f"No batch {batch_id!r}.")
    return await batch_view(session, batch)
