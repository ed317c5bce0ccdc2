"""Scores in events: exact JSON numbers, at least 0, at most 12 decimal places and 30 digits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import PydanticKnownError

from app.intake.event_in import SubmissionEventIn, _checked_score, _exact_score
from tests.api.canvas_world import event


def score_of(value: Any) -> Decimal:
    return SubmissionEventIn.model_validate(event(score=value)).score


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (7, "7"),
        (Decimal("7.50"), "7.50"),
        (Decimal("0.000000000001"), "1E-12"),
        (Decimal("7.5000000000000000000"), "7.5000000000000000000"),  # zeros past 12 places
        (Decimal("999999999999999999.999999999999"), "999999999999999999.999999999999"),
        (Decimal("1E+17"), "1E+17"),
        (Decimal("-0"), "0"),
        (0, "0"),
    ],
)
def test_a_score_is_kept_exactly_as_sent(sent: Any, kept: str) -> None:
    assert str(score_of(sent)) == kept


@pytest.mark.parametrize(
    ("sent", "error_type"),
    [
        (Decimal("0.0000000000001"), "decimal_max_places"),
        (Decimal("1000000000000000000"), "decimal_whole_digits"),
        (Decimal("1E+18"), "decimal_whole_digits"),
        (Decimal("-0.5"), "greater_than_equal"),
        (-1, "greater_than_equal"),
        ("7.5", "value_error"),
        (True, "value_error"),
        (7.5, "value_error"),
        (Decimal("Infinity"), "value_error"),
    ],
)
def test_a_score_that_is_not_an_exact_number_in_range_is_refused(
    sent: Any, error_type: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        score_of(sent)
    (error,) = refused.value.errors()
    assert error["loc"] == ("score",)
    assert error["type"] == error_type


def test_scores_are_written_back_as_the_digits_sent() -> None:
    sent = event(score=Decimal("7.50"), max_score=Decimal("1E+1"))
    written = SubmissionEventIn.model_validate(sent).model_dump_json()

    assert '"score":"7.50"' in written and '"max_score":"1E+1"' in written


def _outcome(check: Any, value: Any) -> tuple[str, str]:
    try:
        kept = check(value)
    except (ValueError, PydanticKnownError) as error:
        return ("refused", type(error).__name__ + str(error))
    return ("kept", repr(kept))


@settings(max_examples=500)
@given(
    st.one_of(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.decimals(allow_nan=True, allow_infinity=True),
        st.decimals(min_value=0, max_value=10**19, places=14),
        st.builds(
            lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
            st.integers(min_value=0, max_value=10**32),
            st.integers(min_value=-20, max_value=20),
        ),
    )
)
def test_the_quick_score_check_answers_as_the_full_one(value: Any) -> None:
    assert _outcome(_exact_score, value) == _outcome(_checked_score, value)
