"""What is kept of an event to tell a repeat: its answer, written from parts, must be what the
documented model writes; its digest must not change between releases."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.grading.eligibility import Eligibility
from app.grading.reasons import ReasonCode, reason
from app.intake.event_in import SubmissionEventIn, parse_json_exactly, request_digest
from app.intake.events import Decision, EventDecision, _answer
from app.intake.schemas import ReasonOut

event_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
reason_lists = st.lists(st.sampled_from(list(ReasonCode)), unique=True, max_size=6)
job_ids = st.none() | st.integers(min_value=1, max_value=2**63 - 1)


@given(event_ids, reason_lists, job_ids)
def test_an_answer_is_byte_for_byte_what_the_event_decision_model_writes(
    event_id: str, codes: list[ReasonCode], job_id: int | None
) -> None:
    eligibility = Eligibility(tuple(reason(code) for code in codes))
    documented = EventDecision(
        event_id=event_id,
        decision=Decision.queued if eligibility.eligible else Decision.not_eligible,
        reasons=[ReasonOut.of(one) for one in eligibility.reasons],
        job_id=job_id,
    )

    assert _answer(event_id, eligibility, job_id) == documented.model_dump_json()


PINNED_EVENT = (
    b'{"event_id":"evt-pinned-1","type":"submitted","occurred_at":"2026-11-20T14:00:00Z",'
    b'"organization":{"id":"org-1","license":"school_district"},'
    b'"formative":{"id":"fm-1","title":"Fractions \\u00e9","auto_passback":true,'
    b'"teacher_ids":["t-1"],"questions":[{"id":"q1","points":2,"grading":"auto"},'
    b'{"id":"q2","points":2.50,"grading":"auto"}]},'
    b'"student":{"id":"s-1","class_id":"c-1","name":"Ana"},"attempt":1,'
    b'"submitted_by":"student","submitted_at":"2026-11-20T13:59:59+01:00",'
    b'"score":4.50,"max_score":4.5,"response_url":"https://formative.example/r/1"}'
)


def test_the_digest_of_an_event_is_the_one_earlier_releases_stored() -> None:
    """Stored events keep this digest: were it to change, resending an event already
    received would be refused as a reused event_id instead of answered as a repeat."""
    event = SubmissionEventIn.model_validate(parse_json_exactly(PINNED_EVENT))

    assert request_digest(event) == (
        "053e3dfdf92a59eeabab46f37ed30093395df7a4719bf18bfbb859748586219c"
    )
