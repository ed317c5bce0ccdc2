"""What every part of manual passback shares: reason codes, who may act, who can be sent."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from app.grading.eligibility import PASSBACK_LICENSE
from app.grading.reasons import REASON_MESSAGES, ReasonCode
from app.lti.launch import can_post_scores
from app.lti.outcomes import FailureCode, teacher_text
from app.store import passback as store
from app.store.models import Formative, Platform

# Why a student cannot be sent (preview rows, `skipped` of a send): the codes of
# app.grading.reasons, plus a Canvas assignment found gone when previewing.
LICENSE_REQUIRED = ReasonCode.license_required
NOT_LAUNCHED_FROM_LMS = ReasonCode.not_launched_from_lms
NOT_A_CANVAS_ASSIGNMENT = ReasonCode.not_a_canvas_assignment
PLATFORM_NOT_REGISTERED = ReasonCode.platform_not_registered
NOT_STARTED = ReasonCode.not_started
ASSIGNMENT_NOT_LINKED = FailureCode.assignment_not_linked

# Preview warnings about a Canvas assignment.
CANVAS_POINTS_ZERO = "canvas_points_zero"
CANVAS_POINTS_UNAVAILABLE = "canvas_points_unavailable"


def explain(code: str | None) -> str | None:
    """What a teacher reads for a reason or failure code (None for unknown codes)."""
    if code is None:
        return None
    if code in REASON_MESSAGES:
        return REASON_MESSAGES[ReasonCode(code)]
    return teacher_text(code)


JsonDecimal = Annotated[
    Decimal, PlainSerializer(lambda value: float(value), return_type=float, when_used="json")
]
"""Decimals are exact inside; JSON answers show them as numbers (8.33, not "8.33")."""


class ManualPassbackError(Exception):
    """A request this module refuses; the API turns it into a problem answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def not_your_formative(formative_id: str) -> ManualPassbackError:
    # The same answer whether or not the formative exists: nothing leaks about others' work.
    return ManualPassbackError(
        403, "not_a_teacher_of_formative", f"You are not a teacher of formative {formative_id!r}."
    )


async def authorize_teacher(
    session: AsyncSession, formative_id: str, teacher_id: str | None
) -> Formative:
    """The formative, if `teacher_id` is among its teachers; 403 otherwise."""
    formative = await store.get_formative(session, formative_id)
    if formative is None or teacher_id is None or teacher_id not in formative.teacher_ids:
        raise not_your_formative(formative_id)
    return formative


def license_ok(formative: Formative) -> bool:
    """The seed's first prerequisite, for manual passback too: a School & District license."""
    return formative.license == PASSBACK_LICENSE


def unsendable_reason(
    entry: store.RosterEntry, platforms: Mapping[str, Platform], *, licensed: bool
) -> str | None:
    """Why this student cannot be sent from what the service knows (None: sendable).

    Canvas is not asked here; a line item found gone is reported by the preview and, for a
    send, by the job's failure (`assignment_not_linked`).
    """
    if not licensed:
        return LICENSE_REQUIRED
    launch = entry.launch
    if launch is None:
        return NOT_LAUNCHED_FROM_LMS
    if not can_post_scores(launch.lineitem_url, launch.ags_scopes):
        return NOT_A_CANVAS_ASSIGNMENT
    platform = platforms.get(launch.platform_id)
    if platform is None or not platform.active:
        return PLATFORM_NOT_REGISTERED
    work = entry.work
    if work is None or not (work.started or work.submitted):
        return NOT_STARTED
    return None
