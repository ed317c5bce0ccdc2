"""The teacher's passback page in headless Chromium, against a running service and the sandbox.

The service runs as `passback serve` (uvicorn, with its delivery workers) in a subprocess on
each database backend (tests/browser/conftest.py). The page is opened with the teacher token
in the address fragment, as Formative would link to it. Screenshots go to test-output/.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Locator, Page, Request, expect

from app.lti.keys import ToolKeyring
from tests.browser.conftest import PHONE, NewPage, screenshot
from tests.support.auth import EVENTS_KEY, bearer, teacher_headers, teacher_token
from tests.support.classroom import Classroom, Student, make_classroom
from tests.support.processes import ServiceProcess
from tests.support.sandbox import RunningSandbox

SEND = "Send to Canvas"


NewClassroom = Callable[..., Awaitable[Classroom]]


@pytest.fixture
def new_classroom(
    api: httpx.AsyncClient, sandbox: RunningSandbox, tool_keys_dir: Path
) -> NewClassroom:
    """A classroom of students with these names in a fresh formative, worth `points` in Canvas."""

    async def make(*names: str, points: int | str) -> Classroom:
        return await make_classroom(
            api,
            sandbox,
            ToolKeyring.load(tool_keys_dir),
            points=points,
            student_names=names,
            formative_id=f"fm-{uuid.uuid4().hex[:8]}",
        )

    return make


async def launch_everyone(classroom: Classroom) -> None:
    """Every student opens the formative from Canvas."""
    for student in classroom.students:
        await classroom.launch(student.student_id)


async def open_and_score(
    classroom: Classroom, students: Iterable[Student], scores: Iterable[str]
) -> None:
    """Each of `students` opens the formative from Canvas and submits the matching score."""
    for student, score in zip(students, scores, strict=True):
        await classroom.launch(student.student_id)
        await classroom.work(student.student_id, score)


async def everyone_scores(classroom: Classroom, score: str) -> None:
    """Every student opens the formative from Canvas and submits `score`."""
    await open_and_score(classroom, classroom.students, [score] * len(classroom.students))


def recorded_requests(page: Page) -> list[Request]:
    """The requests the page makes from now on (the list fills as they are made)."""
    requested: list[Request] = []
    page.on("request", lambda request: requested.append(request))
    return requested


async def describe_formative(
    api: httpx.AsyncClient, classroom: Classroom, class_name: str, **names: str
) -> None:
    """Formative tells the service about the formative and its class before anyone launches
    (`PUT /v1/formatives/{id}`); `names` maps student ids to names (default: the seeded)."""
    students = [
        {"id": student.student_id, "name": names.get(student.student_id, student.name)}
        for student in classroom.students
    ]
    response = await api.put(
        f"/v1/formatives/{classroom.formative_id}",
        json={
            "title": "Fractions quiz",
            "teacher_ids": classroom.teacher_ids,
            "organization": {"id": "org-1", "license": "school_district"},
            "classes": [{"id": classroom.class_id, "name": class_name, "students": students}],
        },
        headers=bearer(EVENTS_KEY),
    )
    assert response.status_code == 200, response.text


def passback_page(service: ServiceProcess, classroom: Classroom, token: str) -> str:
    return f"{service.base_url}/teach/formatives/{classroom.formative_id}/passback#token={token}"


async def open_page(
    page: Page, service: ServiceProcess, classroom: Classroom, teacher: str = "t-1"
) -> None:
    await page.goto(passback_page(service, classroom, teacher_token(teacher)))
    shown = page.locator("#passback-panel:not([hidden]), #empty-state:not([hidden])")
    await expect(shown).to_have_count(1)


async def preview_of(
    api: httpx.AsyncClient, classroom: Classroom, mode: str = "grades"
) -> dict[str, Any]:
    response = await api.get(
        f"/v1/formatives/{classroom.formative_id}/passback/preview",
        params={"mode": mode},
        headers=teacher_headers("t-1"),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows_of(preview: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["student_id"]: row for group in preview["classes"] for row in group["rows"]}


def row_of(page: Page, student_id: str) -> Locator:
    return page.locator(f'tr[data-student-id="{student_id}"]')


def status_of(page: Page, student_id: str) -> Locator:
    return row_of(page, student_id).locator('[data-role="status"]')


def will_send_of(page: Page, student_id: str) -> Locator:
    return row_of(page, student_id).locator('[data-role="will-send"]')


async def will_send(page: Page, student_id: str) -> Decimal | None:
    value = await will_send_of(page, student_id).get_attribute("data-value")
    return Decimal(value) if value else None


async def send_confirmed(page: Page, grades: int) -> None:
    await page.get_by_role("button", name=SEND).click()
    noun = "grade" if grades == 1 else "grades"
    await page.get_by_role("button", name=f"Yes, send {grades} {noun}").click()


def sends(requests: list[Request]) -> list[dict[str, Any]]:
    """The bodies of the send requests the page made."""
    return [
        json.loads(request.post_data or "{}")
        for request in requests
        if request.method == "POST" and request.url.endswith("/passback")
    ]


# --- The whole flow ---------------------------------------------------------------------------


async def test_a_teacher_deselects_overrides_confirms_and_watches_grades_land(
    service: ServiceProcess,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra")
    classroom = await new_classroom(*names, points=20)
    ada, grace, alan, edsger = classroom.students
    await open_and_score(classroom, (ada, grace, alan), ("7", "8.5", "10"))
    await classroom.work(edsger.student_id, "9")  # on Formative's website, not from Canvas
    token = teacher_token("t-1")
    requested = recorded_requests(page)

    await page.goto(passback_page(service, classroom, token))
    await expect(page.get_by_label(f"Send {ada.name}")).to_be_checked()
    assert token not in page.url, "the token leaves the address bar"
    ada_row = row_of(page, ada.student_id)
    await expect(ada_row).to_contain_text("70%")
    await expect(ada_row).to_contain_text("14 / 20")
    await expect(page.get_by_text("3 students selected")).to_be_visible()
    await expect(page.get_by_label(f"Send {edsger.name}")).to_be_disabled()
    await expect(status_of(page, edsger.student_id)).to_contain_text(
        "did not open this formative from Canvas"
    )

    # Keyboard: focus Grace's checkbox and press Space to leave her out.
    await page.get_by_label(f"Send {grace.name}").focus()
    await page.keyboard.press("Space")
    await expect(page.get_by_label(f"Send {grace.name}")).not_to_be_checked()
    await expect(page.get_by_text("2 students selected")).to_be_visible()

    await page.get_by_label(f"Override for {alan.name}").fill("50")
    await send_confirmed(page, 2)

    status = page.locator("#status")
    await expect(status).to_have_attribute("aria-live", "polite")
    await expect(status).to_contain_text("Done: 2 sent")
    await expect(status_of(page, ada.student_id)).to_have_text("Sent: 14 of 20 points")
    await expect(status_of(page, alan.student_id)).to_have_text("Sent: 10 of 20 points")
    await expect(status_of(page, grace.student_id)).to_have_text("Not sent yet")
    await screenshot(page, "teacher-passback")

    assert await classroom.gradebook_score(ada.student_id) == Decimal("14")
    assert await classroom.gradebook_score(alan.student_id) == Decimal("10")
    assert await classroom.gradebook_score(grace.student_id) is None
    urls = [request.url for request in requested]
    assert any("/passback/preview" in url for url in urls)
    assert not any(token in url for url in urls), "the token travels only in a header"
    assert token not in service.log_text(), "the teacher token never reaches the logs"


async def test_complete_incomplete_with_a_flip_a_comment_and_a_zero_point_warning(
    service: ServiceProcess,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=10)
    ada, grace, alan = classroom.students
    await launch_everyone(classroom)
    await classroom.work(ada.student_id, "4")
    await classroom.work(grace.student_id, "9")
    await classroom.work(alan.student_id, "2", event_type="started")

    await open_page(page, service, classroom, teacher="t-2")
    await page.get_by_label("Complete / incomplete (100% or 0%)").check()
    await expect(page.get_by_label(f"Complete for {alan.name}")).not_to_be_checked()
    await expect(page.get_by_label(f"Complete for {grace.name}")).to_be_checked()

    # Grace's work does not count after all; Alan gets credit for what he did in class.
    await page.get_by_label(f"Complete for {grace.name}").uncheck()
    await page.get_by_label(f"Send {alan.name}").check()
    await page.get_by_label(f"Complete for {alan.name}").check()
    await page.get_by_label("Comment for Canvas").fill("Marked in class")
    await send_confirmed(page, 3)
    await expect(page.locator("#status")).to_contain_text("Done: 3 sent")

    assert await classroom.gradebook_score(ada.student_id) == Decimal("10")
    assert await classroom.gradebook_score(grace.student_id) == Decimal("0")
    assert await classroom.gradebook_score(alan.student_id) == Decimal("10")
    comments = (await classroom.submission(ada.student_id))["comments"]
    assert [comment["comment"] for comment in comments] == ["Marked in class"]

    # The assignment is changed to 0 points in Canvas: a reload warns before the next send.
    await sandbox.admin.set_assignment_points(classroom.assignment_id, 0)
    await page.reload()
    warnings = page.get_by_role("region", name="Warnings")
    await expect(warnings).to_contain_text("worth 0 points")
    await screenshot(page, "teacher-passback-warning")


# --- 1. Will send, live; in Canvas now; changed in Canvas by hand ---------------------------


async def test_will_send_follows_overrides_and_ticks_and_is_what_lands_in_canvas(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra")
    classroom = await new_classroom(*names, points="20.5")
    ada, grace, alan, edsger = classroom.students
    await open_and_score(classroom, (ada, grace, alan), ("8.5", "7", "10"))
    await classroom.launch(edsger.student_id)
    await classroom.work(edsger.student_id, "3", event_type="started")

    await open_page(page, service, classroom)

    # No override: the page's numbers are the API's, to the cent (8.5/10 of 20.5 = 17.425,
    # half up to 17.43, where binary floats give 17.42).
    expected = rows_of(await preview_of(api, classroom))
    for student in classroom.students:
        api_score = Decimal(str(expected[student.student_id]["canvas_score"]))
        assert await will_send(page, student.student_id) == api_score, student.name
    assert await will_send(page, ada.student_id) == Decimal("17.43")
    await expect(will_send_of(page, ada.student_id)).to_contain_text("17.43 / 20.5")

    # Overrides change "will send" as they are typed.
    await page.get_by_label(f"Override for {ada.name}").fill("150")
    await expect(will_send_of(page, ada.student_id)).to_contain_text("30.75 / 20.5")
    await expect(will_send_of(page, ada.student_id)).to_contain_text("above 100 %")
    await page.get_by_label(f"Override for {grace.name}").fill("33.335")
    await expect(will_send_of(page, grace.student_id)).to_contain_text("6.83 / 20.5")
    await page.get_by_label(f"Override for {alan.name}").fill("12.34")
    await page.get_by_label(f"Override unit for {alan.name}").select_option("points")
    await expect(will_send_of(page, alan.student_id)).to_contain_text("12.34 / 20.5")
    await page.get_by_label(f"Override for {ada.name}").fill("")
    await expect(will_send_of(page, ada.student_id)).to_contain_text("17.43 / 20.5")
    shown = {s.student_id: await will_send(page, s.student_id) for s in (grace, alan)}
    await screenshot(page, "teacher-passback-overrides")

    # Send Grace and Alan only: Canvas holds what the page showed.
    for student in classroom.students:
        box = page.get_by_label(f"Send {student.name}")
        if student in (grace, alan):
            await box.check()
        else:
            await box.uncheck()
    await send_confirmed(page, 2)
    await expect(page.locator("#status")).to_contain_text("Done: 2 sent")
    for student in (grace, alan):
        assert await classroom.gradebook_score(student.student_id) == shown[student.student_id]

    # Complete / incomplete: the API's numbers again, then ticks flip them live.
    await page.get_by_label("Complete / incomplete (100% or 0%)").check()
    await expect(page.get_by_label(f"Complete for {edsger.name}")).not_to_be_checked()
    expected = rows_of(await preview_of(api, classroom, "complete_incomplete"))
    for student in classroom.students:
        api_score = Decimal(str(expected[student.student_id]["canvas_score"]))
        assert await will_send(page, student.student_id) == api_score, student.name
    await page.get_by_label(f"Complete for {edsger.name}").check()
    await expect(will_send_of(page, edsger.student_id)).to_contain_text("20.5 / 20.5")
    await page.get_by_label(f"Complete for {ada.name}").uncheck()
    await expect(will_send_of(page, ada.student_id)).to_contain_text("0 / 20.5")


async def test_in_canvas_now_sits_beside_will_send_and_a_grade_changed_by_hand_is_marked(
    service: ServiceProcess,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=20)
    ada, grace, alan = classroom.students
    await open_and_score(classroom, classroom.students, ("8", "9.5", "6"))
    await open_page(page, service, classroom)
    await send_confirmed(page, 3)
    await expect(page.locator("#status")).to_contain_text("Done: 3 sent")

    # The page reads Canvas back after a send; then a teacher changes Grace's grade in Canvas.
    grace_now = row_of(page, grace.student_id).locator('[data-role="canvas-now"]')
    await expect(grace_now).to_have_text("19")
    await sandbox.admin.grade_as_teacher(classroom.assignment_id, grace.user_id, 17)
    await page.reload()

    await expect(grace_now).to_contain_text("17")
    await expect(grace_now).to_contain_text("changed in Canvas by hand")
    await expect(will_send_of(page, grace.student_id)).to_contain_text("19 / 20")
    ada_now = row_of(page, ada.student_id).locator('[data-role="canvas-now"]')
    await expect(ada_now).to_have_text("16")
    await expect(page.locator('[data-role="changed-in-canvas"]')).to_have_count(1)
    await screenshot(page, "teacher-passback-changed-in-canvas")

    # Sending over it says so first.
    await page.get_by_label(f"Send {grace.name}").check()
    await page.get_by_role("button", name=SEND).click()
    warnings = page.locator("#confirm-warnings")
    await expect(warnings).to_contain_text("changed in Canvas by hand will be overwritten")
    await expect(warnings).to_contain_text(grace.name)
    await page.get_by_role("button", name="Go back").click()
    assert await classroom.gradebook_score(alan.student_id) == Decimal("12")


# --- 2. Enter never sends; confirm, then send -----------------------------------------------


async def test_enter_in_an_override_box_sends_nothing(
    service: ServiceProcess,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    classroom = await new_classroom("Ada Lovelace", points=20)
    (ada,) = classroom.students
    await everyone_scores(classroom, "8")
    requested = recorded_requests(page)
    await open_page(page, service, classroom)

    override = page.get_by_label(f"Override for {ada.name}")
    await override.fill("500")
    await override.press("Enter")
    await page.get_by_label(f"Override unit for {ada.name}").select_option("points")
    await page.get_by_label(f"Override unit for {ada.name}").press("Enter")
    await page.get_by_label("Comment for Canvas").press("Enter")
    await page.wait_for_timeout(500)

    assert sends(requested) == []
    await expect(page.locator("#confirm")).not_to_be_visible()
    assert await classroom.gradebook_score(ada.student_id) is None


async def test_an_override_the_service_would_refuse_is_marked_and_blocks_sending(
    service: ServiceProcess,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    classroom = await new_classroom("Ada Lovelace", points=20)
    (ada,) = classroom.students
    await everyone_scores(classroom, "8")
    await open_page(page, service, classroom)

    override = page.get_by_label(f"Override for {ada.name}")
    await override.fill("12.345")
    await page.get_by_label(f"Override unit for {ada.name}").select_option("points")

    await expect(override).to_have_attribute("aria-invalid", "true")
    await expect(row_of(page, ada.student_id)).to_contain_text("at most 2 decimals")
    await expect(will_send_of(page, ada.student_id)).to_have_text("—")
    await expect(page.get_by_role("button", name=SEND)).to_be_disabled()
    await override.fill("12.34")
    await expect(override).not_to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("button", name=SEND)).to_be_enabled()


async def test_the_confirmation_says_what_goes_where_and_warns_before_anything_is_sent(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=20)
    await describe_formative(api, classroom, "Period 1")
    course = sandbox.state.course(classroom.course_id).name
    ada, grace, alan = classroom.students
    await launch_everyone(classroom)
    await classroom.work(ada.student_id, "8")
    await classroom.work(grace.student_id, "9")
    await classroom.work(alan.student_id, "2", event_type="started")
    requested = recorded_requests(page)
    await open_page(page, service, classroom)

    await expect(page.locator('[data-role="assignment"]')).to_have_text(
        "Canvas assignment: “Fractions quiz” (20 points)"
    )
    await page.get_by_label(f"Send {alan.name}").check()
    await page.get_by_label(f"Override for {ada.name}").fill("120")
    await page.get_by_role("button", name=SEND).click()

    dialog = page.get_by_role("dialog", name="Send these grades to Canvas?")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator('[data-role="goes-to"]')).to_have_text(
        [f"3 grades → “Fractions quiz” (20 points) in Period 1, {course}"]
    )
    warnings = dialog.locator("#confirm-warnings")
    await expect(warnings).to_contain_text("1 grade above 100 %")
    await expect(warnings).to_contain_text(f"(extra credit): {ada.name}")
    await expect(warnings).to_contain_text("1 student did not submit")
    await expect(warnings).to_contain_text(alan.name)
    await screenshot(page, "teacher-passback-confirm")

    await dialog.get_by_role("button", name="Go back").click()
    await expect(dialog).not_to_be_visible()
    assert sends(requested) == [], "going back sends nothing"

    await send_confirmed(page, 3)
    await expect(page.locator("#status")).to_contain_text("Done: 3 sent")
    (body,) = sends(requested)
    assert sorted(body["select"]["student_ids"]) == [s.student_id for s in classroom.students]
    assert body["overrides"] == {ada.student_id: {"percent": "120"}}
    assert await classroom.gradebook_score(ada.student_id) == Decimal("24")


async def test_a_points_override_on_a_zero_point_assignment_is_warned(
    service: ServiceProcess,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper")
    classroom = await new_classroom(*names, points=0)
    ada, grace = classroom.students
    await everyone_scores(classroom, "8")
    await open_page(page, service, classroom)
    await expect(will_send_of(page, ada.student_id)).to_contain_text("0 / 0")

    await page.get_by_label(f"Override for {ada.name}").fill("5")
    await page.get_by_label(f"Override unit for {ada.name}").select_option("points")
    await expect(page.get_by_label(f"Override for {ada.name}")).to_have_value("5")
    await expect(will_send_of(page, ada.student_id)).to_contain_text("0 / 0")
    await page.get_by_role("button", name=SEND).click()

    warnings = page.locator("#confirm-warnings")
    await expect(warnings).to_contain_text(
        f"1 points override on a Canvas assignment worth 0 points will be 0 (give the "
        f"assignment points in Canvas first for extra credit): {ada.name}"
    )
    await expect(warnings).to_contain_text(f"so 1 grade will be 0: {grace.name}")
    await page.get_by_role("button", name="Go back").click()


# --- 3. Default selection ---------------------------------------------------------------------


async def test_default_selection_is_the_rows_whose_canvas_grade_would_change(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra")
    classroom = await new_classroom(*names, points=20)
    ada, grace, alan, edsger = classroom.students
    await launch_everyone(classroom)
    await classroom.work(ada.student_id, "8")
    await classroom.work(grace.student_id, "9")
    await classroom.work(alan.student_id, "2", event_type="started")
    await open_page(page, service, classroom)
    await page.get_by_label(f"Send {grace.name}").uncheck()
    await send_confirmed(page, 1)  # Ada's grade is in Canvas now
    await expect(page.locator("#status")).to_contain_text("Done: 1 sent")
    await classroom.work(edsger.student_id, "10")
    requested = recorded_requests(page)
    await page.reload()

    # Ada: already in Canvas, unchanged. Alan: has not submitted. Grace, Edsger: would change.
    expected = rows_of(await preview_of(api, classroom))
    for student in classroom.students:
        box = page.get_by_label(f"Send {student.name}")
        if expected[student.student_id]["default_selected"]:
            await expect(box).to_be_checked()
        else:
            await expect(box).not_to_be_checked()
    assert [s for s in classroom.students if expected[s.student_id]["default_selected"]] == [
        grace,
        edsger,
    ]
    await expect(page.get_by_text("2 students selected")).to_be_visible()

    # The whole class, then one student out.
    await page.get_by_label("Send the whole class").check()
    await expect(page.get_by_text("4 students selected")).to_be_visible()
    await page.get_by_label(f"Send {alan.name}").uncheck()
    await expect(page.get_by_label("Send the whole class")).not_to_be_checked()
    await send_confirmed(page, 3)
    await expect(page.locator("#status")).to_contain_text("Done: 3 sent")
    (body,) = sends(requested)
    chosen = {ada.student_id, grace.student_id, edsger.student_id}
    assert set(body["select"]["student_ids"]) == chosen
    assert await classroom.gradebook_score(alan.student_id) is None


# --- 4. Loading and mode switches -------------------------------------------------------------


async def test_a_slow_canvas_shows_progress_and_a_mode_switch_marks_the_table_stale(
    service: ServiceProcess,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper")
    classroom = await new_classroom(*names, points=20)
    await everyone_scores(classroom, "8")
    await sandbox.admin.add_fault("latency", path="/line_items", method="GET", delay_ms=3000)

    await page.goto(passback_page(service, classroom, teacher_token("t-1")))
    loading = page.locator("#loading")
    await expect(loading).to_be_visible()
    await expect(loading.get_by_role("progressbar")).to_be_visible()
    await expect(loading).to_contain_text("s (Canvas is slow to answer)")
    await screenshot(page, "teacher-passback-loading")
    await expect(page.locator("#passback-panel")).to_be_visible(timeout=30_000)
    await expect(loading).to_be_hidden()
    send = page.get_by_role("button", name=SEND)
    await expect(send).to_be_enabled()

    await page.get_by_label("Complete / incomplete (100% or 0%)").check()
    classes = page.locator("#classes")
    await expect(classes).to_have_attribute("aria-busy", "true")
    await expect(classes).to_have_class("stale")
    await expect(send).to_be_disabled()
    await expect(page.locator("#stale-note")).to_contain_text("cannot be sent")
    await expect(page.get_by_role("columnheader", name="Override").first).to_be_visible()
    await screenshot(page, "teacher-passback-stale")

    await expect(page.get_by_role("columnheader", name="Complete?").first).to_be_visible(
        timeout=30_000
    )
    await expect(classes).to_have_attribute("aria-busy", "false")
    await expect(send).to_be_enabled()
    await expect(page.locator("#stale-note")).to_be_hidden()


# --- 5. Empty state ---------------------------------------------------------------------------


async def test_before_anyone_opens_it_the_page_says_what_must_happen_and_who_has_not(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=20)
    await describe_formative(api, classroom, "Period 1 Algebra")

    await open_page(page, service, classroom)

    empty = page.locator("#empty-state")
    await expect(empty).to_be_visible()
    await expect(empty).to_contain_text("open this formative from the Canvas assignment")
    waiting = empty.locator(".waiting")
    await expect(waiting).to_contain_text("Period 1 Algebra: 3 students still to open it")
    for student in classroom.students:
        await expect(waiting.get_by_role("listitem").filter(has_text=student.name)).to_be_visible()
    await expect(page.locator("#passback-panel")).to_be_hidden()
    await screenshot(page, "teacher-passback-empty")


# --- 6. Per-class refusal; grouped failures ---------------------------------------------------


async def test_a_class_canvas_refuses_is_explained_once_and_cannot_be_selected(
    service: ServiceProcess,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=20)
    await everyone_scores(classroom, "8")
    await sandbox.admin.set_course_state(classroom.course_id, "concluded")

    await open_page(page, service, classroom)

    refusal = page.locator('[data-role="refusal"]')
    await expect(refusal).to_have_count(1)
    await expect(refusal).to_contain_text("The Canvas course has concluded")
    told = await page.locator("#passback-panel").inner_text()
    assert told.count("The Canvas course has concluded") == 1, "once per class"
    for student in classroom.students:
        await expect(page.get_by_label(f"Send {student.name}")).to_be_disabled()
    await expect(page.get_by_role("button", name=SEND)).to_be_disabled()
    assert "course_concluded" not in await page.locator("#passback-panel").inner_text()
    await screenshot(page, "teacher-passback-refusal")


async def test_the_confirmation_names_a_class_canvas_refuses_and_the_others_are_sent(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    sandbox: RunningSandbox,
    tool_keys_dir: Path,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper")
    open_class = await new_classroom(*names, points=20)
    closed_class = await make_classroom(
        api,
        sandbox,
        ToolKeyring.load(tool_keys_dir),
        points=20,
        student_names=("Alan Turing", "Edsger Dijkstra"),
        formative_id=open_class.formative_id,
        class_id="c-4",
    )
    for number, student in enumerate(closed_class.students, start=3):
        student.student_id = f"s-{number}"  # Formative's ids are unique across classes
    for classroom in (open_class, closed_class):
        for student in classroom.students:
            await classroom.launch(student.student_id)
            await classroom.work(student.student_id, "8")
    await sandbox.admin.set_course_state(closed_class.course_id, "concluded")
    await open_page(page, service, open_class)

    await expect(page.locator('[data-role="refusal"]')).to_have_count(1)
    open_title = page.locator(f'section[data-class-id="{open_class.class_id}"] h2')
    await page.get_by_role("button", name=SEND).click()
    dialog = page.get_by_role("dialog", name="Send these grades to Canvas?")
    await expect(dialog.locator("#confirm-summary > li")).to_have_count(2)  # a class, the mode
    await expect(dialog.locator('[data-role="goes-to"]')).to_have_text(
        [f"2 grades → “Fractions quiz” (20 points) in {await open_title.inner_text()}"]
    )
    closed_title = page.locator(f'section[data-class-id="{closed_class.class_id}"] h2')
    await expect(dialog.locator("#confirm-warnings")).to_contain_text(
        f"Nothing goes to {await closed_title.inner_text()}: The Canvas course has concluded"
    )
    await dialog.get_by_role("button", name="Yes, send 2 grades").click()

    await expect(page.locator("#status")).to_contain_text("Done: 2 sent")
    for student in open_class.students:
        assert await open_class.gradebook_score(student.student_id) == Decimal("16")
    for student in closed_class.students:
        assert await closed_class.gradebook_score(student.student_id) is None


async def test_an_assignment_without_a_readable_name_is_the_canvas_assignment_in_the_confirmation(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper")
    classroom = await new_classroom(*names, points=20)
    await describe_formative(api, classroom, "Period 1")
    course = sandbox.state.course(classroom.course_id).name
    await everyone_scores(classroom, "8")
    with sandbox.state.lock:  # a platform whose line item has a blank label
        sandbox.state.line_items[str(classroom.world["line_item_id"])].label = " "
    await open_page(page, service, classroom)

    await expect(page.locator('[data-role="assignment"]')).to_have_count(0)
    await page.get_by_role("button", name=SEND).click()

    dialog = page.get_by_role("dialog", name="Send these grades to Canvas?")
    await expect(dialog.locator('[data-role="goes-to"]')).to_have_text(
        [f"2 grades → the Canvas assignment (20 points) in Period 1, {course}"]
    )


async def test_failures_after_a_send_are_told_once_per_cause(
    service: ServiceProcess,
    page: Page,
    sandbox: RunningSandbox,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await new_classroom(*names, points=20)
    await everyone_scores(classroom, "8")
    await open_page(page, service, classroom)
    await sandbox.admin.set_course_state(classroom.course_id, "concluded")  # after the preview

    await send_confirmed(page, 3)

    await expect(page.locator("#status")).to_contain_text("3 failed")
    outcomes = page.locator("#outcomes > li")
    await expect(outcomes).to_have_count(1)
    await expect(outcomes).to_contain_text("Canvas did not take: 3 grades.")
    await expect(outcomes).to_contain_text(", ".join(names))
    for student in classroom.students:
        await expect(status_of(page, student.student_id)).to_have_text("Not sent: see why below")
    await screenshot(page, "teacher-passback-failures")


# --- 7. Names, phones, contrast, help text, sign-in -----------------------------------------


async def test_class_and_student_names_show_and_ids_only_when_nothing_else_is_known(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper")
    classroom = await new_classroom(*names, points=20)
    ada, grace = classroom.students
    await describe_formative(api, classroom, "Period 1 Algebra", **{grace.student_id: ""})
    await classroom.launch(ada.student_id)
    await classroom.work(ada.student_id, "8")

    await open_page(page, service, classroom)

    await expect(page.get_by_role("heading", name="Period 1 Algebra")).to_be_visible()
    await expect(row_of(page, ada.student_id).get_by_role("rowheader")).to_have_text(ada.name)
    await expect(row_of(page, grace.student_id).get_by_role("rowheader")).to_have_text(
        f"Student {grace.student_id}"
    )
    assert classroom.class_id not in await page.locator("#classes").inner_text()


async def test_on_a_phone_rows_are_cards_and_the_scores_need_no_horizontal_scrolling(
    service: ServiceProcess,
    new_page: NewPage,
    new_classroom: NewClassroom,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Maximilian Alexander Featherstonehaugh")
    classroom = await new_classroom(*names, points=20)
    await everyone_scores(classroom, "8")
    page = await new_page(**PHONE)
    await open_page(page, service, classroom)

    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
    for student in classroom.students:
        boxes = []
        for role in ("will-send", "canvas-now"):
            cell = row_of(page, student.student_id).locator(f'[data-role="{role}"]')
            box = await cell.bounding_box()
            assert box is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (student.name, role)
            boxes.append(box)
        will, now = boxes
        assert abs(will["y"] - now["y"]) < 2 and will["x"] < now["x"], "side by side"
    await screenshot(page, "teacher-passback-375")
    await page.get_by_role("button", name=SEND).click()
    await screenshot(page, "teacher-passback-375-confirm")


CONTRAST = """
(selector) => {
  const channels = (color) => color.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const backgroundBehind = (node) => {
    for (let up = node.parentElement; up; up = up.parentElement) {
      const color = channels(getComputedStyle(up).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  return [...document.querySelectorAll(selector)].map((node) => {
    const style = getComputedStyle(node);
    const border = luminance(channels(style.borderTopColor));
    const behind = luminance(backgroundBehind(node));
    const [high, low] = [border, behind].sort((a, b) => b - a);
    return {
      control: node.getAttribute("aria-label") || node.id,
      ratio: (high + 0.05) / (low + 0.05),
      width: parseFloat(style.borderTopWidth),
    };
  });
}
"""


async def test_control_borders_contrast_three_to_one_and_help_text_follows_the_mode(
    service: ServiceProcess,
    page: Page,
    new_classroom: NewClassroom,
) -> None:
    classroom = await new_classroom("Ada Lovelace", points=20)
    (ada,) = classroom.students
    await everyone_scores(classroom, "8")
    await open_page(page, service, classroom)

    controls = await page.evaluate(CONTRAST, 'input[type="text"], select, textarea')
    assert {c["control"] for c in controls} >= {f"Override for {ada.name}", "comment"}
    for control in controls:
        assert control["width"] >= 1, control
        assert control["ratio"] >= 3, control
    help_text = page.locator("#override-help")
    await expect(help_text).to_be_visible()

    await page.get_by_label("Complete / incomplete (100% or 0%)").check()
    await expect(help_text).to_be_hidden()
    await expect(page.get_by_label(f"Complete for {ada.name}")).to_be_visible()
    await page.get_by_label("Grades (percent of the Canvas points)").check()
    await expect(help_text).to_be_visible()


async def test_a_token_with_a_bad_signature_is_not_valid_and_an_old_one_has_expired(
    service: ServiceProcess,
    new_page: NewPage,
    new_classroom: NewClassroom,
) -> None:
    classroom = await new_classroom("Ada Lovelace", points=20)
    await everyone_scores(classroom, "8")
    base = f"{service.base_url}/teach/formatives/{classroom.formative_id}/passback#token="
    forged = teacher_token("t-1", secret="not-the-secret-0123456789-abcdef-xyz")
    expired = teacher_token("t-1", expires_in=-3600)

    page = await new_page()
    await page.goto(base + forged)
    problem = page.locator("#load-error")
    await expect(problem).to_have_text(
        "This sign-in link is not valid. Open this page again from Formative."
    )

    page = await new_page()
    await page.goto(base + expired)
    await expect(page.locator("#load-error")).to_have_text(
        "Your sign-in has expired. Open this page again from Formative."
    )
