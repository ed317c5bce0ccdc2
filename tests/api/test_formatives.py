"""PUT /v1/formatives/{id}: what Formative knows of a formative before anyone launches
(SPEC §2.2, §3), on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.canvas_world import EVENTS, event
from tests.support.auth import ADMIN_KEY, bearer, teacher_headers

TEACHER = teacher_headers("t-1")


def formative_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Fractions quiz",
        "teacher_ids": ["t-1", "t-2"],
        "organization": {"id": "org-9", "license": "school_district"},
        "classes": [
            {
                "id": "c-3",
                "name": "Period 3 Math",
                "students": [{"id": "s-1", "name": "Ada L."}, {"id": "s-2", "name": "Grace H."}],
            },
            {"id": "c-4", "name": "Period 4 Math", "students": [{"id": "s-9", "name": ""}]},
        ],
    }
    body.update(changes)
    return body


async def put(
    client: httpx.AsyncClient, body: dict[str, Any], formative_id: str = "fm-42"
) -> httpx.Response:
    return await client.put(f"/v1/formatives/{formative_id}", json=body, headers=EVENTS)


async def preview_of(
    client: httpx.AsyncClient, formative_id: str = "fm-42", headers: dict[str, str] = TEACHER
) -> httpx.Response:
    return await client.get(f"/v1/formatives/{formative_id}/passback/preview", headers=headers)


async def test_a_teacher_previews_a_formative_known_only_from_put(
    client: httpx.AsyncClient,
) -> None:
    response = await put(client, formative_body())
    assert response.status_code == 200, response.text
    assert response.json()["students"] == 3

    previewed = await preview_of(client)

    assert previewed.status_code == 200, previewed.text
    body = previewed.json()
    assert body["title"] == "Fractions quiz"
    assert body["activity"] is False
    assert body["license_ok"] is True
    classes = {group["class_id"]: group for group in body["classes"]}
    assert classes["c-3"]["class_name"] == "Period 3 Math"
    assert classes["c-3"]["refusal"] is None
    rows = {row["student_id"]: row for group in body["classes"] for row in group["rows"]}
    assert set(rows) == {"s-1", "s-2", "s-9"}
    assert rows["s-1"]["student_name"] == "Ada L."
    assert rows["s-9"]["student_name"] is None, "an unknown name is None, never the id"
    for row in rows.values():
        assert row["launched"] is False
        assert row["sendable"] is False
        assert row["reason"] == "not_launched_from_lms"
        assert row["default_selected"] is False


async def test_put_is_idempotent_and_replaces_the_classes_and_students(
    client: httpx.AsyncClient,
) -> None:
    assert (await put(client, formative_body())).status_code == 200
    again = await put(client, formative_body())
    assert again.status_code == 200
    fewer = formative_body(
        title="Fractions quiz (v2)",
        classes=[{"id": "c-3", "name": "P3", "students": [{"id": "s-2", "name": "Grace"}]}],
    )
    assert (await put(client, fewer)).status_code == 200

    body = (await preview_of(client)).json()

    assert body["title"] == "Fractions quiz (v2)"
    assert [(group["class_id"], group["class_name"]) for group in body["classes"]] == [
        ("c-3", "P3")
    ]
    assert [(row["student_id"], row["student_name"]) for row in body["classes"][0]["rows"]] == [
        ("s-2", "Grace")
    ]


async def test_a_teacher_not_among_its_teachers_gets_the_same_403_whether_or_not_it_exists(
    client: httpx.AsyncClient,
) -> None:
    assert (await put(client, formative_body())).status_code == 200
    stranger = teacher_headers("t-9")

    existing = await preview_of(client, "fm-42", stranger)
    missing = await preview_of(client, "fm-nope", stranger)

    assert existing.status_code == missing.status_code == 403
    assert existing.json()["code"] == missing.json()["code"] == "not_a_teacher_of_formative"
    assert "Ada" not in existing.text


async def test_events_keep_updating_what_they_carry_after_a_put(
    client: httpx.AsyncClient,
) -> None:
    assert (await put(client, formative_body(teacher_ids=["t-1"]))).status_code == 200
    started = event(
        event_id="evt-started",
        type="started",
        **{"formative.teacher_ids": ["t-1", "t-7"], "student.name": "Ada Lovelace"},
    )
    for name in ("submitted_at", "submitted_by"):
        started.pop(name)
    answer = await client.post("/v1/submission-events", json=started, headers=EVENTS)
    assert answer.status_code == 202, answer.text

    body = (await preview_of(client, headers=teacher_headers("t-7"))).json()

    assert body["activity"] is True
    rows = {row["student_id"]: row for group in body["classes"] for row in group["rows"]}
    assert rows["s-1"]["student_name"] == "Ada Lovelace"
    assert rows["s-2"]["student_name"] == "Grace H."


async def test_put_refuses_bad_bodies_with_a_problem(client: httpx.AsyncClient) -> None:
    twice = formative_body(
        classes=[
            {"id": "c-3", "students": [{"id": "s-1"}]},
            {"id": "c-4", "students": [{"id": "s-1"}]},
        ]
    )
    too_many = formative_body(classes=[{"id": f"c-{n}"} for n in range(501)])
    long_name = formative_body(title="x" * 1025)
    no_license = formative_body(organization={"id": "org-9"})
    unknown_field = formative_body(auto_passback=True)
    for body in (twice, too_many, long_name, no_license, unknown_field, [], "x"):
        response = await client.put("/v1/formatives/fm-42", json=body, headers=EVENTS)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]

    too_long_id = await put(client, formative_body(), formative_id="f" * 256)
    assert too_long_id.status_code == 422


async def test_put_needs_the_events_scope(client: httpx.AsyncClient) -> None:
    as_admin = await client.put(
        "/v1/formatives/fm-42", json=formative_body(), headers=bearer(ADMIN_KEY)
    )
    as_teacher = await client.put("/v1/formatives/fm-42", json=formative_body(), headers=TEACHER)
    anonymous = await client.put("/v1/formatives/fm-42", json=formative_body())

    assert as_admin.status_code == 403
    assert as_teacher.status_code == 403
    assert anonymous.status_code == 401


async def test_put_formative_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/v1/formatives/{formative_id}"]["put"]

    assert operation["operationId"] == "putFormative"
    assert "422" in operation["responses"]
