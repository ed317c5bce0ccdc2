"""Reading the student's result before a resend: which results say a post of the job's
submission landed (pure decisions; the reads themselves are in test_delivery.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from app.delivery.attempt import Found, found_in
from app.grading.score import ScoreToSend
from app.lti.ags_documents import Result
from app.store.models import PassbackJob

SUBMITTED = datetime(2026, 11, 20, 14, 3, 10, 900_123, tzinfo=UTC)
RESPONSE = "https://formative.example/r/abc"
OURS = {"submitted_at": "2026-11-20T14:03:10.900+00:00", "submission_data": RESPONSE}


def job() -> PassbackJob:
    return PassbackJob(submitted_at=SUBMITTED, response_url=RESPONSE)


def result(score: str, submission: dict[str, Any]) -> Result:
    return Result("u1", Decimal(score), Decimal(10), MappingProxyType(submission))


SCORE = ScoreToSend(Decimal("8.3"), Decimal(10), "Completed")


@pytest.mark.parametrize(
    ("stored", "found"),
    [
        (None, Found.nothing),
        (result("8.3", {**OURS, "new_submission": True}), Found.ours),
        (result("8.30", {**OURS, "submitted_at": "2026-11-20T14:03:10.900Z"}), Found.ours),
        # A teacher regraded in Canvas after our post: the submission is there.
        (result("5", OURS), Found.submission),
        # Another submission of the student (an earlier passback) is there, not this one.
        (result("8.3", {**OURS, "submitted_at": "2026-11-19T09:00:00.000+00:00"}), Found.nothing),
        (
            result("8.3", {**OURS, "submission_data": "https://formative.example/r/x"}),
            Found.nothing,
        ),
        # A platform that keeps no extension: only an equal score tells.
        (result("8.3", {}), Found.ours),
        (result("6", {}), Found.unclear),
    ],
)
def test_what_the_students_result_says_about_our_submission(
    stored: Result | None, found: Found
) -> None:
    assert found_in(stored, job(), SCORE) is found
