"""The submission event as Formative's backend sends it (SPEC §3): validated strictly, its
scores exact decimals (the body parsed with JSON numbers kept as Decimal, never through
binary floats), and its digests, which tell a resend of the same event from a reused id."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticKnownError

from app.grading.eligibility import (
    EventType,
    QuestionGrading,
)
from app.intake.schemas import FormativeId, Moment

SCORE_MAX_DIGITS = 30
SCORE_MAX_PLACES = 12


def _digits(sign_digits_exponent: tuple[int, tuple[int, ...], int]) -> tuple[int, int]:
    """(decimal places, digits) of a finite Decimal's tuple, trailing zeros not counted."""
    _, digits, exponent = sign_digits_exponent
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
        exponent += 1
    if exponent >= 0:
        return 0, significant + exponent
    return -exponent, max(significant, -exponent)


_WHOLE_DIGITS = SCORE_MAX_DIGITS - SCORE_MAX_PLACES
_WHOLE_LIMIT = 10**_WHOLE_DIGITS


def _exact_score(value: object) -> Decimal:
    """A score or a maximum: a JSON number (never a string or a boolean), at least 0, with
    at most 12 decimal places and 30 digits (trailing zeros aside), kept exactly; -0 is 0.

    One function rather than pydantic's chain of constraint validators: each event carries
    a number per question, and this runs on the intake's hot path. Plain values (a whole
    number, or a positive decimal with few places) pass at once; the rest are examined by
    `_checked_score`, which gives the same answer for those (a property test holds it)."""
    kind = type(value)
    if kind is int:
        if 0 <= cast(int, value) < _WHOLE_LIMIT:
            return Decimal(cast(int, value))
    elif kind is Decimal:
        number = cast(Decimal, value)
        if (
            number.is_finite()
            and number > 0
            and number.adjusted() < _WHOLE_DIGITS
            and cast(int, number.as_tuple().exponent) >= -SCORE_MAX_PLACES
        ):
            return number
    return _checked_score(value)


def _checked_score(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(value)
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number < 0:
        raise PydanticKnownError("greater_than_equal", {"ge": 0})
    places, digits = _digits(cast(tuple[int, tuple[int, ...], int], number.as_tuple()))
    if places > SCORE_MAX_PLACES:
        raise PydanticKnownError("decimal_max_places", {"decimal_places": SCORE_MAX_PLACES})
    if digits - places > _WHOLE_DIGITS:
        raise PydanticKnownError("decimal_whole_digits", {"whole_digits": _WHOLE_DIGITS})
    return Decimal(0) if number == 0 else number


Score = Annotated[
    Decimal,
    PlainValidator(_exact_score),
    PlainSerializer(str, return_type=str, when_used="json"),  # as pydantic writes a Decimal
    WithJsonSchema({"type": "number", "minimum": 0}),
]
Url = Annotated[StrictStr, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]


class UpdateCause(StrEnum):
    answer_completed = "answer_completed"
    answer_edited = "answer_edited"
    teacher_adjusted = "teacher_adjusted"
    answer_key_changed = "answer_key_changed"
    points_changed = "points_changed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organization(_Strict):
    id: FormativeId
    license: Annotated[StrictStr, Field(min_length=1, max_length=64)] = Field(
        description="`school_district` (passback included) or another tier.",
        examples=["school_district"],
    )


class Question(_Strict):
    id: FormativeId
    points: Score
    grading: QuestionGrading


class FormativeIn(_Strict):
    id: FormativeId
    title: Annotated[StrictStr, Field(max_length=1024)]
    auto_passback: StrictBool = Field(description="The formative's automatic-passback setting.")
    teacher_ids: list[FormativeId] = Field(max_length=1000)
    questions: list[Question] = Field(max_length=5000)


class Student(_Strict):
    id: FormativeId
    class_id: FormativeId
    name: Annotated[StrictStr, Field(max_length=1024)] = ""


class SubmissionEventIn(_Strict):
    """What happened to a student's work on a formative (SPEC §3)."""

    event_id: FormativeId = Field(description="Unique per event; a repeat gets the first answer.")
    type: EventType
    cause: UpdateCause | None = Field(default=None, description="Required when `type` is updated.")
    occurred_at: Moment = Field(description="When the score was produced in Formative.")
    organization: Organization
    formative: FormativeIn
    student: Student
    attempt: StrictInt = Field(ge=1, le=1_000_000)
    submitted_by: Literal["student", "teacher"] | None = None
    submitted_at: Moment | None = None
    score: Score
    max_score: Score
    response_url: Url | None = Field(
        default=None, description="The student's response in Formative (opened by SpeedGrader)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SubmissionEventIn:
        if self.type is EventType.updated and self.cause is None:
            raise ValueError("'cause' is required when type is 'updated'")
        if self.type is not EventType.updated and self.cause is not None:
            raise ValueError("'cause' is only for type 'updated'")
        if self.type is EventType.submitted and (
            self.submitted_at is None or self.submitted_by is None or self.response_url is None
        ):
            raise ValueError(
                "a 'submitted' event needs 'submitted_at', 'submitted_by' and 'response_url'"
            )
        if self.type is EventType.started and self.submitted_at is not None:
            raise ValueError("a 'started' event has no 'submitted_at'")
        return self

    @property
    def work_submitted(self) -> bool:
        return self.type is not EventType.started and self.submitted_at is not None


_EVENT_JSON = SubmissionEventIn.__pydantic_serializer__


class MalformedJsonError(ValueError):
    """The body is not JSON (or uses NaN/Infinity, which JSON does not have)."""


def _refuse_constant(name: str) -> Any:
    raise MalformedJsonError(f"{name} is not a JSON number")


_EXACT_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def parse_json_exactly(body: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal. (What `json.loads` does with
    bytes, with one decoder made once rather than one per call.)"""
    try:
        return _EXACT_JSON.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJsonError(str(exc)) from exc
    except RecursionError as exc:  # nested deeper than the decoder's stack allows
        raise MalformedJsonError("the JSON is nested too deeply") from exc


def request_digest(event: SubmissionEventIn) -> str:
    """SHA-256 of the event's JSON (`model_dump_json`'s bytes, taken from the serializer):
    the digest earlier releases stored, numbers spelled as sent."""
    return hashlib.sha256(_EVENT_JSON.to_json(event)).hexdigest()


_NUMBERS = re.compile(rb'"(points|score|max_score)":"([^"]+)"')
"""The event's numbers (`Score`s) in its JSON, where the serializer writes them as strings."""


def _value_text(number: Decimal) -> str:
    """One spelling per value: 7, 7.0, 7e0 and 70e-1 are all `7`; 2.50 is `2.5`."""
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _by_value(number: re.Match[bytes]) -> bytes:
    text = _value_text(Decimal(number[2].decode())).encode()
    return b'"' + number[1] + b'":"' + text + b'"'


def value_digest(event: SubmissionEventIn) -> str:
    """SHA-256 of the event's JSON with its numbers spelled by value, the digest stored now:
    a resend whose numbers are written otherwise (`7.0` for `7`) is the same event. For an
    event whose numbers are plain (no trailing zeros, no exponent: nearly every event) it is
    `request_digest`, so what earlier releases stored still matches, and it costs no more."""
    written = _EVENT_JSON.to_json(event)
    if not _plain_numbers(event):
        written = _NUMBERS.sub(_by_value, written)
    return hashlib.sha256(written).hexdigest()


def _plain_numbers(event: SubmissionEventIn) -> bool:
    """No number with an exponent or with trailing zeros after its point (what `str` writes
    of a Decimal is what the event's JSON holds)."""
    for number in (event.score, event.max_score, *(q.points for q in event.formative.questions)):
        text = str(number)
        if "E" in text or (text[-1] == "0" and "." in text):
            return False
    return True
