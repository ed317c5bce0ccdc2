"""The answer to an event is written from parts; it must be what the documented model writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.grading.eligibility import Eligibility
from app.grading.reasons import ReasonCode, reason
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
