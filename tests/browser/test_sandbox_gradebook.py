"""The sandbox gradebook as a person reads it, in Chromium at desktop and phone widths."""

from __future__ import annotations

import httpx
from playwright.async_api import expect

from app.sandbox import seed_scenario
from tests.browser.conftest import PHONE, NewPage, screenshot
from tests.sandbox.canvas import post_score, score
from tests.support.sandbox import RunningSandbox, ToolKey, tool_key_fixture  # noqa: F401

SUBMITTED = {
    "submission_type": "basic_lti_launch",
    "submission_data": "https://formative.example/r/abc",
    "submitted_at": "2026-11-20T14:03:10.900Z",
}


async def test_the_gradebook_grid_reads_on_a_desktop_and_on_a_phone(
    sandbox: RunningSandbox, tool_key: ToolKey, new_page: NewPage
) -> None:
    world = seed_scenario(
        sandbox.state,
        tool_jwk=tool_key.public_jwk(),
        points=10,
        students=["Ada Lovelace", "Grace Hopper", "Maximilian Alexander Featherstonehaugh"],
        course_name="Algebra 1 — Period 3",
    )
    token = await sandbox.access_token(tool_key, world.client_id)
    ada, grace, _ = world.students
    async with httpx.AsyncClient(timeout=10) as http:
        body = score(ada.lti_id, 8.5, 10, comment="Well done", extension=SUBMITTED)
        assert (await post_score(http, sandbox, world, token, body)).status_code == 200
        body = score(grace.lti_id, 12, 10, extension=SUBMITTED)
        assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    page = await new_page()
    await page.goto(sandbox.url("/"))
    await page.get_by_role("link", name="Algebra 1 — Period 3").click()
    grid = page.get_by_role("region", name="Grades")
    await expect(grid).to_contain_text("Out of 10")
    await expect(grid).to_contain_text("submitted 20 Nov 2026, 14:03 UTC")
    await expect(grid.locator('[data-role="above-points"]')).to_have_count(1)
    await expect(page.get_by_text(ada.lti_id)).to_be_hidden()
    await screenshot(page, "sandbox-gradebook")

    phone = await new_page(**PHONE)
    await phone.goto(page.url)
    overflow = await phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the grid scrolls inside its own region, not the page"
    names = phone.locator("th.student .name")
    box = await names.first.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    await screenshot(phone, "sandbox-gradebook-375")
