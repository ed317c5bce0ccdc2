"""A teacher reaches only their own formatives: not another teacher's preview, batch or
students, not even by naming that teacher's students in a send of their own."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from app.context import AppContext
from app.store.models import PassbackJob
from tests.reliability.remote import EVENTS, RemoteClass, launch_all, seed_class
from tests.support.auth import teacher_headers
from tests.support.sandbox import RunningSandbox


async def formative_of(
    client: httpx.AsyncClient, room: RemoteClass, formative_id: str, teacher_id: str
) -> RemoteClass:
    """The class's students launch and work on `formative_id`, taught by `teacher_id`."""
    room.formative_id, room.teacher_ids = formative_id, (teacher_id,)
    await launch_all(client, room)
    for learner in room.learners:
        event = room.submitted_event(learner)
        event["formative"]["auto_passback"] = False
        response = await client.post("/v1/submission-events", json=event, headers=EVENTS)
        assert response.status_code == 202, response.text
    return room


async def test_a_teacher_cannot_see_or_send_another_teachers_students(
    client: httpx.AsyncClient, context: AppContext, sandbox: RunningSandbox, tool_keys_dir: Path
) -> None:
    theirs = await formative_of(
        client, await seed_class(client, sandbox, tool_keys_dir, students=2), "fm-theirs", "t-a"
    )
    event = {**theirs.submitted_event(theirs.learners[0])}
    event["event_id"] = "evt-mine-started"
    event["type"] = "started"
    event["formative"] = {**event["formative"], "id": "fm-mine", "teacher_ids": ["t-b"]}
    event["student"] = {"id": "s-mine", "class_id": "c-mine", "name": "Mine"}
    for key in ("submitted_by", "submitted_at"):
        event.pop(key)
    assert (
        await client.post("/v1/submission-events", json=event, headers=EVENTS)
    ).status_code == 202
    intruder = teacher_headers("t-b")

    preview = await client.get("/v1/formatives/fm-theirs/passback/preview", headers=intruder)
    assert preview.status_code == 403
    for learner in theirs.learners:
        assert learner.student_id not in preview.text
    send_theirs = await client.post(
        "/v1/formatives/fm-theirs/passback",
        json={"select": {"class_ids": [theirs.class_id]}},
        headers=intruder,
    )
    assert send_theirs.status_code == 403
    # Naming their students in a send of one's own formative reaches nobody.
    smuggled = await client.post(
        "/v1/formatives/fm-mine/passback",
        json={"select": {"student_ids": [learner.student_id for learner in theirs.learners]}},
        headers=intruder,
    )
    assert smuggled.status_code == 202, smuggled.text
    assert smuggled.json()["jobs"] == []
    assert {row["reason"] for row in smuggled.json()["skipped"]} == {"not_launched_from_lms"}
    async with context.sessions() as session:
        assert list(await session.scalars(select(PassbackJob))) == []

    owner = await client.get(
        "/v1/formatives/fm-theirs/passback/preview", headers=teacher_headers("t-a")
    )
    assert owner.status_code == 200
    assert all(learner.student_id in owner.text for learner in theirs.learners)
