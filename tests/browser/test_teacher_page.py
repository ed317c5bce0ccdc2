"""The teacher's passback page in headless Chromium, against a running service and the sandbox.

The service runs as `passback serve` (uvicorn, with its delivery workers) in a subprocess on a
SQLite file (tests.support.processes). The page is opened with the teacher token in the
address fragment, as Formative would link to it. Screenshots go to test-output/.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, async_playwright, expect

from app.lti.keys import ToolKeyring
from tests.support.auth import teacher_token
from tests.support.classroom import Classroom, make_classroom
from tests.support.processes import ServiceProcess, service_env, start_service
from tests.support.sandbox import RunningSandbox, sandbox_fixture, sandbox_server_fixture  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
UI_TIMEOUT_MS = 20_000


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium; skipped where it cannot be had, but a failure under CI."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def service(
    chromium: Path, tmp_path: Path, tool_keys_dir: Path
) -> AsyncIterator[ServiceProcess]:
    """`passback serve` (API and delivery workers) on a SQLite file and a free port."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'passback.db'}"
    env = service_env(database_url, var_dir=tmp_path, keys_dir=tool_keys_dir)
    running = await start_service(env, log_path=tmp_path / "service.log")
    try:
        yield running
    finally:
        await running.terminate()


@pytest.fixture
async def page(chromium: Path) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            opened = await browser.new_page(viewport={"width": 1280, "height": 900})
            opened.set_default_timeout(UI_TIMEOUT_MS)
            yield opened
        finally:
            await browser.close()


@pytest.fixture
async def api(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


async def classroom_of(
    api: httpx.AsyncClient, sandbox: RunningSandbox, tool_keys_dir: Path, *names: str, points: int
) -> Classroom:
    keyring = ToolKeyring.load(tool_keys_dir)
    return await make_classroom(api, sandbox, keyring, points=points, student_names=names)


def passback_page(service: ServiceProcess, classroom: Classroom, token: str) -> str:
    return f"{service.base_url}/teach/formatives/{classroom.formative_id}/passback#token={token}"


def status_of(page: Page, student_id: str) -> Locator:
    return page.locator(f'tr[data-student-id="{student_id}"] [data-role="status"]')


async def test_a_teacher_deselects_overrides_sends_and_watches_grades_land(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    sandbox: RunningSandbox,
    tool_keys_dir: Path,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra")
    classroom = await classroom_of(api, sandbox, tool_keys_dir, *names, points=20)
    ada, grace, alan, edsger = classroom.students
    for student, score in zip((ada, grace, alan), ("7", "8.5", "10"), strict=True):
        await classroom.launch(student.student_id)
        await classroom.work(student.student_id, score)
    await classroom.work(edsger.student_id, "9")  # on Formative's website, not from Canvas
    token = teacher_token("t-1")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    await page.goto(passback_page(service, classroom, token))
    await expect(page.get_by_label(f"Send {ada.name}")).to_be_checked()
    assert token not in page.url, "the token leaves the address bar"
    ada_row = page.locator(f'tr[data-student-id="{ada.student_id}"]')
    await expect(ada_row).to_contain_text("70%")
    await expect(ada_row).to_contain_text("14")
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
    await page.get_by_role("button", name="Send to Canvas").click()
    await page.get_by_role("button", name="Yes, send 2 grades").click()

    status = page.locator("#status")
    await expect(status).to_have_attribute("aria-live", "polite")
    await expect(status).to_contain_text("Done: 2 sent")
    await expect(status_of(page, ada.student_id)).to_have_text("Sent: 14 of 20 points")
    await expect(status_of(page, alan.student_id)).to_have_text("Sent: 10 of 20 points")
    await expect(status_of(page, grace.student_id)).to_have_text("Not sent yet")
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "teacher-passback.png"), full_page=True)

    assert await classroom.gradebook_score(ada.student_id) == Decimal("14")
    assert await classroom.gradebook_score(alan.student_id) == Decimal("10")
    assert await classroom.gradebook_score(grace.student_id) is None
    assert any("/passback/preview" in url for url in requested)
    assert not any(token in url for url in requested), "the token travels only in a header"
    assert token not in service.log_text(), "the teacher token never reaches the logs"


async def test_complete_incomplete_with_a_flip_and_a_zero_point_warning(
    service: ServiceProcess,
    api: httpx.AsyncClient,
    page: Page,
    sandbox: RunningSandbox,
    tool_keys_dir: Path,
) -> None:
    names = ("Ada Lovelace", "Grace Hopper", "Alan Turing")
    classroom = await classroom_of(api, sandbox, tool_keys_dir, *names, points=10)
    ada, grace, alan = classroom.students
    for student in classroom.students:
        await classroom.launch(student.student_id)
    await classroom.work(ada.student_id, "4")
    await classroom.work(grace.student_id, "9")
    await classroom.work(alan.student_id, "2", event_type="started")

    await page.goto(passback_page(service, classroom, teacher_token("t-2")))
    await page.get_by_label("Complete / incomplete (100% or 0%)").check()
    await expect(page.get_by_label(f"Complete for {alan.name}")).not_to_be_checked()
    await expect(page.get_by_label(f"Complete for {grace.name}")).to_be_checked()

    # Grace's work does not count after all; Alan gets credit for what he did in class.
    await page.get_by_label(f"Complete for {grace.name}").uncheck()
    await page.get_by_label(f"Complete for {alan.name}").check()
    await page.get_by_label("Comment for Canvas").fill("Marked in class")
    await page.get_by_role("button", name="Send to Canvas").click()
    await page.get_by_role("button", name="Yes, send 3 grades").click()
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
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "teacher-passback-warning.png"), full_page=True)
