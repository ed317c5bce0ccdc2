"""Field types and answer parts shared by the intake endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictStr

from app.grading.reasons import Reason, ReasonCode

FormativeId = Annotated[StrictStr, Field(min_length=1, max_length=255)]
"""An identifier from Formative (formative, student, class, organization, event)."""


class ReasonOut(BaseModel):
    """Why nothing was (or will be) sent, for the teacher."""

    code: ReasonCode
    message: str

    @classmethod
    def of(cls, reason: Reason) -> ReasonOut:
        return cls(code=reason.code, message=reason.message)
