"""Poison times: a fuzzer (hypothesis) sends events whose times span years 1 to 9999 in
every UTC offset, at the edges most. Each is either stored and read back everywhere (intake,
job list, preview, delivery) or refused with a 422 that names the field; never a 500, and a
classmate's grade still reaches Canvas afterwards."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.context import AppContext
from tests.api.canvas_world import (
    ADMIN,
    EVENTS,
    CanvasWorld,
    canvas_world,
    event,
    launch_from_canvas,
)
from tests.support.auth import teacher_headers
from tests.support.classroom import deliver_all
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    sandbox_fixture,
    sandbox_server_fixture,
)

EXAMPLES = 80

years = st.one_of(st.sampled_from([1, 2, 9998, 9999]), st.integers(1, 9999))
offsets = st.one_of(
    st.just("Z"),
    st.sampled_from([-14 * 60, 14 * 60, -23 * 60 - 59, 23 * 60 + 59]),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


@st.composite
def moments(draw: st.DrawFn) -> str:
    year = draw(years)
    month = draw(st.sampled_from([1, 12]) | st.integers(1, 12))
    day = draw(st.sampled_from([1, 28]) | st.integers(1, 28))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    second, micro = draw(st.integers(0, 59)), draw(st.integers(0, 999_999))
    offset = draw(offsets)
    if offset == "Z":
        zone = "Z"
    else:
        assert isinstance(offset, int)
        sign = "-" if offset < 0 else "+"
        zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micro:06d}{zone}"
    )


@st.composite
def edge_moments(draw: st.DrawFn) -> str:
    """Within a day of the first or last instant: in or out of range by the offset."""
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    sign = "-" if offset < 0 else "+"
    zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    day = draw(st.sampled_from(["0001-01-01", "9999-12-31"]))
    return f"{day}T{hour:02d}:{minute:02d}:00{zone}"


def storable(moment: str) -> bool:
    """The oracle: an instant within years 1–9999 once in UTC."""
    try:
        datetime.fromisoformat(moment).astimezone(UTC)
    except OverflowError:
        return False
    return True


def examples() -> list[tuple[str, str]]:
    """Pairs (occurred_at, submitted_at) drawn by hypothesis (fixed seed: the same every run)."""
    drawn: list[tuple[str, str]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(moments() | edge_moments(), moments() | edge_moments())
    def collect(occurred_at: str, submitted_at: str) -> None:
        drawn.append((occurred_at, submitted_at))

    collect()
    return drawn


@pytest.fixture
async def world(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext
) -> CanvasWorld:
    """The sandbox trusts this instance's tool key, so its deliveries are accepted."""
    await sandbox.admin.set_throttle(enabled=False)
    world = await canvas_world(
        client, sandbox, tool_jwk=context.keyring.current.public_jwk(), students=3
    )
    for number, student_id in enumerate(["s-1", "s-2"]):
        await launch_from_canvas(client, sandbox, world, number, student_id=student_id)
    return world


async def test_fuzzed_event_times_are_stored_and_read_back_or_refused_never_a_500(
    client: httpx.AsyncClient, context: AppContext, sandbox: RunningSandbox, world: CanvasWorld
) -> None:
    pairs = examples()
    assert any(not storable(a) or not storable(b) for a, b in pairs)  # the edges are reached
    for number, (occurred_at, submitted_at) in enumerate(pairs):
        body = event(event_id=f"fuzz-{number}", occurred_at=occurred_at, submitted_at=submitted_at)
        response = await client.post("/v1/submission-events", json=body, headers=EVENTS)
        if storable(occurred_at) and storable(submitted_at):
            assert response.status_code == 202, (occurred_at, submitted_at, response.text)
        else:
            assert response.status_code == 422, (occurred_at, submitted_at, response.text)
            fields = {error["field"] for error in response.json()["errors"]}
            assert fields <= {"body.occurred_at", "body.submitted_at"}, fields

    listed = await client.get("/v1/passback/jobs", headers=ADMIN)
    assert listed.status_code == 200 and listed.json()["unreadable_job_ids"] == []
    preview = await client.get(
        "/v1/formatives/fm-42/passback/preview", headers=teacher_headers("t-1")
    )
    assert preview.status_code == 200, preview.text

    classmate = event(event_id="classmate", student={"id": "s-2", "class_id": "c-3", "name": "B"})
    assert (
        await client.post("/v1/submission-events", json=classmate, headers=EVENTS)
    ).status_code == 202
    await deliver_all(context)
    cell = await sandbox.admin.submission(world.assignment_id, world.lti_id(1))
    assert cell["score"] == "7"
