"""The preview reads back what Canvas holds (AGS Results service) and says which rows a send
would change, which were changed in Canvas by hand, and which are selected by default
(SPEC §2.2), against the sandbox on both databases."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.context import AppContext
from app.lti.tokens import SCOPE_LINEITEM_READONLY, SCOPE_SCORE
from tests.api.test_manual_passback import (
    as_decimal,
    everyone_launched_and_submitted,
    preview,
    rows_of,
    send,
    whole_class,
)
from tests.support.classroom import (
    Classroom,
    deliver_all,
    twenty_point_classroom_fixture,  # noqa: F401
)
from tests.support.sandbox import sandbox_fixture, sandbox_server_fixture  # noqa: F401


def grade(row: dict[str, Any], name: str) -> Decimal | None:
    value = row[name]
    return None if value is None else as_decimal(value)


async def test_after_a_send_canvas_now_equals_what_was_delivered_and_nothing_would_change(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await send(classroom, whole_class(classroom))
    await deliver_all(context)

    rows = rows_of(await preview(classroom))

    for row in rows.values():
        assert row["canvas_now_state"] == "read"
        assert grade(row, "canvas_now") == grade(row, "canvas_score")
        assert grade(row, "last_delivered") == grade(row, "canvas_score")
        assert row["changed_in_canvas"] is False
        assert row["would_change"] is False
        assert row["default_selected"] is False


async def test_a_grade_changed_in_canvas_by_hand_is_flagged_and_selected(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await send(classroom, whole_class(classroom))
    await deliver_all(context)
    maya = classroom.student("s-1")
    await classroom.sandbox.admin.grade_as_teacher(classroom.assignment_id, maya.user_id, "19")
    await classroom.work("s-2", "9", event_type="updated", cause="teacher_adjusted")

    rows = rows_of(await preview(classroom))

    by_hand = rows["s-1"]
    assert grade(by_hand, "canvas_now") == Decimal(19)
    assert grade(by_hand, "last_delivered") == Decimal(14)
    assert grade(by_hand, "canvas_score") == Decimal(14)
    assert by_hand["changed_in_canvas"] is True
    assert by_hand["would_change"] is True
    assert by_hand["default_selected"] is True
    regraded = rows["s-2"]
    assert grade(regraded, "canvas_now") == Decimal(17)
    assert grade(regraded, "canvas_score") == Decimal(18)
    assert regraded["changed_in_canvas"] is False
    assert regraded["would_change"] is True
    assert regraded["default_selected"] is True
    untouched = rows["s-3"]
    assert (untouched["would_change"], untouched["default_selected"]) == (False, False)


async def test_never_sent_students_would_change_but_unsubmitted_ones_are_not_preselected(
    classroom: Classroom,
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    await classroom.launch("s-2")
    await classroom.work("s-2", "4", event_type="started")

    grades = rows_of(await preview(classroom, "grades"))
    complete = rows_of(await preview(classroom, "complete_incomplete"))

    assert grades["s-1"]["canvas_now_state"] == "none"
    assert grades["s-1"]["canvas_now"] is None
    assert (grades["s-1"]["would_change"], grades["s-1"]["default_selected"]) == (True, True)
    assert (grades["s-2"]["would_change"], grades["s-2"]["default_selected"]) == (True, False)
    assert "s-3" not in grades, "unknown until a launch, an event or PUT /v1/formatives"
    assert grade(complete["s-2"], "canvas_score") == Decimal(0)
    assert (complete["s-2"]["would_change"], complete["s-2"]["default_selected"]) == (True, True)


async def test_without_the_results_scope_canvas_now_is_unknown(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.sandbox.admin.update_developer_key(
        classroom.world["client_id"], scopes=[SCOPE_LINEITEM_READONLY, SCOPE_SCORE]
    )
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    before = rows_of(await preview(classroom))
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)

    after = rows_of(await preview(classroom))

    assert {row["canvas_now_state"] for row in before.values()} == {"unknown"}
    assert all(row["would_change"] for row in before.values())
    assert after["s-1"]["canvas_now_state"] == "unknown"
    assert grade(after["s-1"], "last_delivered") == Decimal(14)
    assert after["s-1"]["would_change"] is False, "the same value was delivered"
    assert after["s-1"]["changed_in_canvas"] is False
    assert after["s-2"]["would_change"] is True


async def test_a_class_whose_canvas_refuses_grades_says_so_once_with_the_teachers_words(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.update_developer_key(classroom.world["client_id"], active=False)

    body = await preview(classroom)

    (group,) = body["classes"]
    assert group["refusal"]["code"] == "developer_key_inactive"
    assert "developer key" in group["refusal"]["message"]
    assert "developer_key_inactive" not in group["refusal"]["message"]
    (line_item,) = group["lineitems"]
    assert line_item["problem_code"] == "developer_key_inactive"
    assert line_item["canvas_points"] is None
    (warning,) = body["warnings"]
    assert warning["code"] == "developer_key_inactive"
    assert warning["class_id"] == classroom.class_id
    assert "can still be sent" not in warning["message"]
    assert not any(row["default_selected"] for row in group["rows"])


async def test_a_concluded_course_is_a_refusal_of_the_class(classroom: Classroom) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.set_course_state(classroom.course_id, "concluded")

    (group,) = (await preview(classroom))["classes"]

    assert group["refusal"]["code"] == "course_concluded"
    assert "Reopen the course" in group["refusal"]["message"]


async def test_each_class_names_its_canvas_assignment_from_the_line_item_read_for_its_points(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.clear_requests()

    body = await preview(classroom)

    (group,) = body["classes"]
    (line_item,) = group["lineitems"]
    assert line_item["title"] == "Fractions quiz"
    assert as_decimal(line_item["canvas_points"]) == 20
    assert {row["lineitem_url"] for row in group["rows"]} == {line_item["lineitem_url"]}
    reads = await classroom.sandbox.admin.requests(path_contains="/line_items/", method="GET")
    assert len(reads) == 2, "the title comes with the points: no extra read"


async def test_a_blank_assignment_label_or_an_unread_line_item_leaves_the_title_unknown(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    with classroom.sandbox.state.lock:
        classroom.sandbox.state.line_items[str(classroom.world["line_item_id"])].label = "  "

    blank = await preview(classroom)
    await classroom.sandbox.admin.update_developer_key(classroom.world["client_id"], active=False)
    refused = await preview(classroom)

    (line_item,) = blank["classes"][0]["lineitems"]
    assert line_item["title"] is None
    assert as_decimal(line_item["canvas_points"]) == 20, "the rest of the read still counts"
    (line_item,) = refused["classes"][0]["lineitems"]
    assert (line_item["title"], line_item["problem_code"]) == (None, "developer_key_inactive")
