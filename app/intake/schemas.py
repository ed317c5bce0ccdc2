"""Field types and answer parts shared by the intake endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field, StrictStr
from pydantic_core import PydanticCustomError

from app.grading.reasons import Reason, ReasonCode

FormativeId = Annotated[StrictStr, Field(min_length=1, max_length=255)]
"""An identifier from Formative (formative, student, class, organization, event)."""

TIME_OUT_OF_RANGE = "time_out_of_range"
"""The `type` of a field error for an instant outside years 1–9999 in UTC."""


def _iso_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


def _storable(moment: datetime) -> datetime:
    """An instant both databases store and read back: within years 1–9999 once in UTC
    (`9999-12-31T23:59:59-14:00` is in year 10000, which PostgreSQL keeps and its driver
    cannot read). The value is returned as given: its spelling is part of the request digest."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            TIME_OUT_OF_RANGE, "must be an instant within years 1 to 9999 in UTC"
        ) from None
    return moment


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_storable)]
"""A time in a request body: ISO 8601 with a zone, an instant the service can store."""


class ReasonOut(BaseModel):
    """Why nothing was (or will be) sent, for the teacher."""

    code: ReasonCode
    message: str

    @classmethod
    def of(cls, reason: Reason) -> ReasonOut:
        return cls(code=reason.code, message=reason.message)
