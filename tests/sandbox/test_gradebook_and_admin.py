"""The gradebook a teacher would see, the admin API, the request log, and the demo seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest

from app.sandbox import SandboxConfig, SandboxState, Scenario, seed_demo
from tests.sandbox.canvas import bearer, post_score, score
from tests.support.sandbox import RunningSandbox, ToolKey


async def test_gradebook_shows_score_attempts_submission_and_comments(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    extension = {
        "submission_type": "basic_lti_launch",
        "submission_data": "https://formative.example/r/abc",
        "submitted_at": "2026-11-20T14:03:10.900Z",
    }
    body = score(world.students[0].lti_id, 83, 100, comment="Good", extension=extension)
    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    gradebook = await sandbox.admin.gradebook(world.course_id)

    assert gradebook["course"]["id"] == world.course_id
    (assignment,) = gradebook["assignments"]
    assert (assignment["points_possible"], assignment["id"]) == ("10", world.assignment_id)
    graded, untouched, _ = assignment["submissions"]
    assert graded["lti_id"] == world.students[0].lti_id
    assert (graded["score"], graded["attempt"], graded["workflow_state"]) == ("8.3", 1, "graded")
    assert graded["submission_type"] == "basic_lti_launch"
    assert graded["url"] == "https://formative.example/r/abc"
    assert graded["submitted_at"] == "2026-11-20T14:03:10.900000+00:00"
    assert graded["grader"] == f"tool:{world.client_id}"
    assert [c["comment"] for c in graded["comments"]] == ["Good"]
    assert (untouched["score"], untouched["attempt"]) == (None, 0)


@dataclass
class PageText:
    """What a person reads on a sandbox page: visible text (closed <details> bodies apart),
    per gradebook cell and per student, plus the page's meta tags."""

    visible: list[str] = field(default_factory=list)
    hidden_in_details: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    flagged: set[tuple[str, str]] = field(default_factory=set)
    meta: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def cell(self, user_id: str, assignment_id: str) -> str:
        return " ".join(" ".join(self.cells[(user_id, assignment_id)]).split())

    def text(self) -> str:
        return " ".join(" ".join(self.visible).split())


class _PageReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = PageText()
        self._details_depth = 0
        self._in_summary = False
        self._user: str | None = None
        self._cell: tuple[str, str] | None = None
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "meta" and "name" in values:
            self.page.meta[values["name"]] = values.get("content", "")
        elif tag == "details":
            self._details_depth += 1
        elif tag == "summary":
            self._in_summary = True
        elif tag == "tr" and "data-user-id" in values:
            self._user = values["data-user-id"]
        elif tag == "td" and self._user and "data-assignment-id" in values:
            self._cell = (self._user, values["data-assignment-id"])
            self.page.cells[self._cell] = []
        elif tag == "a":
            self._href = values.get("href")
        if self._cell and values.get("data-role") == "above-points":
            self.page.flagged.add(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag == "details":
            self._details_depth -= 1
        elif tag == "summary":
            self._in_summary = False
        elif tag == "td":
            self._cell = None
        elif tag == "a":
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip or not data.strip():
            return
        if self._href is not None:
            self.page.links[data.strip()] = self._href
        if self._details_depth and not self._in_summary:
            self.page.hidden_in_details.append(data)
            return
        self.page.visible.append(data)
        if self._cell is not None:
            self.page.cells[self._cell].append(data)


def read_page(html: str) -> PageText:
    reader = _PageReader()
    reader.feed(html)
    return reader.page


async def gradebook_page(
    http: httpx.AsyncClient, sandbox: RunningSandbox, course_id: str
) -> PageText:
    response = await http.get(sandbox.url(f"/sandbox/gradebook/courses/{course_id}/html"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return read_page(response.text)


async def test_gradebook_page_lists_students_and_scores(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await post_score(http, sandbox, world, token, score(world.students[0].lti_id, 7, 10))

    page = await gradebook_page(http, sandbox, world.course_id)

    assert world.students[0].name in page.text()
    assert page.cell(world.students[0].user_id, world.assignment_id).startswith("7 ")
    assert page.cell(world.students[1].user_id, world.assignment_id) == "–"
    assert "Out of 10" in page.text()


async def test_gradebook_page_fits_a_phone_with_a_viewport_meta_tag(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    page = await gradebook_page(http, sandbox, world.course_id)

    assert page.meta["viewport"] == "width=device-width, initial-scale=1"


async def test_gradebook_page_shows_times_as_people_read_them(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    extension = {
        "submission_type": "basic_lti_launch",
        "submission_data": "https://formative.example/r/abc",
        "submitted_at": "2026-11-20T14:03:10.900Z",
    }
    body = score(world.students[0].lti_id, 8, 10, extension=extension)
    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    page = await gradebook_page(http, sandbox, world.course_id)

    cell = page.cell(world.students[0].user_id, world.assignment_id)
    assert "submitted 20 Nov 2026, 14:03 UTC" in cell
    assert "2026-11-20T" not in page.text(), "ISO times stay in <time datetime>"
    assert page.links["Open the submission"] == "https://formative.example/r/abc"


async def test_gradebook_page_keeps_the_lti_user_id_out_of_the_way(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    page = await gradebook_page(http, sandbox, world.course_id)

    lti_id = world.students[0].lti_id
    assert lti_id not in page.text()
    assert lti_id in " ".join(page.hidden_in_details), "one click away, under IDs"


async def test_gradebook_page_flags_a_grade_above_the_points_possible(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    first, second, _ = world.students
    await post_score(http, sandbox, world, token, score(first.lti_id, 12, 10))
    await post_score(http, sandbox, world, token, score(second.lti_id, 10, 10))

    page = await gradebook_page(http, sandbox, world.course_id)

    assert page.flagged == {(first.user_id, world.assignment_id)}
    assert "above 10 points" in page.cell(first.user_id, world.assignment_id)
    assert "above" not in page.cell(second.user_id, world.assignment_id)


async def test_gradebook_page_escapes_what_the_platform_was_told(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    learner = await sandbox.admin.create_student(world.course_id, name="<b>Bobby</b> & co")

    response = await http.get(sandbox.url(f"/sandbox/gradebook/courses/{world.course_id}/html"))

    assert "&lt;b&gt;Bobby&lt;/b&gt; &amp; co" in response.text
    assert "<b>Bobby</b>" not in response.text
    assert learner["name"] in read_page(response.text).text()


async def test_gradebook_page_links_a_submission_only_when_it_is_a_web_address(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    first, second, _ = world.students
    for student, url in ((first, "javascript:alert(1)"), (second, "https://formative.example/r")):
        extension = {"submission_type": "basic_lti_launch", "submission_data": url}
        body = score(student.lti_id, 8, 10, extension=extension)
        assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    response = await http.get(sandbox.url(f"/sandbox/gradebook/courses/{world.course_id}/html"))

    assert "javascript:" not in response.text
    assert read_page(response.text).links["Open the submission"] == "https://formative.example/r"


async def test_sandbox_index_lists_every_course_with_its_gradebook(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.create_course(name="Algebra II")

    response = await http.get(sandbox.url("/"))

    assert response.status_code == 200
    page = read_page(response.text)
    assert page.meta["viewport"] == "width=device-width, initial-scale=1"
    course = await sandbox.admin.gradebook(world.course_id)
    name = course["course"]["name"]
    assert page.links[name] == f"/sandbox/gradebook/courses/{world.course_id}/html"
    assert "Algebra II" in page.links
    assert "3 students · 1 assignment" in page.text()
    followed = await http.get(sandbox.url(page.links[name]))
    assert followed.status_code == 200


async def test_sandbox_index_without_courses_says_how_to_make_one(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    page = read_page((await http.get(sandbox.url("/"))).text)

    assert "No courses yet" in page.text()


async def test_sandbox_pages_are_never_faulted_or_logged_as_platform_traffic(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.clear_requests()
    await sandbox.admin.add_fault("error")

    index = await http.get(sandbox.url("/"))
    style = await http.get(sandbox.url("/sandbox/static/gradebook.css"))

    assert (index.status_code, style.status_code) == (200, 200)
    assert style.headers["content-type"].startswith("text/css")
    assert await sandbox.admin.requests() == []


async def test_gradebook_of_an_unknown_course_is_not_found(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await http.get(sandbox.url("/sandbox/gradebook/courses/nope"))

    assert response.status_code == 404


async def test_admin_api_seeds_a_world_a_tool_can_grade_in(
    sandbox: RunningSandbox, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    key = await sandbox.admin.create_developer_key(public_jwk=tool_key.public_jwk())
    course = await sandbox.admin.create_course(name="Algebra", tools=[key["client_id"]])
    assignment = await sandbox.admin.create_assignment(
        course["id"], name="Quiz", points=4, allowed_attempts=2
    )
    learner = await sandbox.admin.create_student(course["id"], name="Ada Lovelace")
    token = await sandbox.access_token(tool_key, key["client_id"])

    response = await http.post(
        assignment["line_item_url"] + "/scores",
        json=score(learner["lti_id"], 3, 4),
        headers=bearer(token),
    )

    assert response.status_code == 200
    cell = await sandbox.admin.submission(assignment["id"], learner["lti_id"])
    assert (cell["score"], cell["attempt"]) == ("3", 1)
    assert await sandbox.admin.token_grants(key["client_id"]) == 1


async def test_admin_scenario_returns_what_a_registration_needs(
    sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await sandbox.admin.scenario(tool_jwk=tool_key.public_jwk(), students=["Ada", "Bo"])

    assert world["token_url"] == sandbox.token_url
    assert world["jwks_url"] == sandbox.jwks_url
    assert world["issuer"] == sandbox.issuer
    assert [s["name"] for s in world["students"]] == ["Ada", "Bo"]
    assert world["line_item_url"].endswith(f"/line_items/{world['line_item_id']}")


async def test_admin_answers_404_for_unknown_records(sandbox: RunningSandbox) -> None:
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await sandbox.admin.create_assignment("no-such-course", client_id="x")

    assert missing.value.response.status_code == 404


async def test_request_log_keeps_bodies_and_headers_but_never_authorization(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.clear_requests()
    await post_score(http, sandbox, world, token, score(world.students[0].lti_id, 5))

    (entry,) = await sandbox.admin.requests(path_contains="/scores", method="POST")

    assert entry["status"] == 200
    assert '"scoreGiven":5' in entry["request_body"].replace(" ", "")
    assert "resultUrl" in entry["response_body"]
    assert "authorization" not in entry["request_headers"]
    assert token not in str(entry)
    assert entry["request_headers"]["content-type"] == "application/vnd.ims.lis.v1.score+json"


async def test_admin_pages_are_not_logged_and_reset_empties_everything(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error")
    await sandbox.admin.gradebook(world.course_id)

    await sandbox.admin.reset()

    assert sandbox.state.courses == {}
    assert (await sandbox.admin.set_faults())["rules"] == []
    assert await sandbox.admin.requests() == []


async def test_urls_follow_the_host_the_client_called(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    origin = f"http://localhost:{sandbox.server.port}"

    response = await http.get(
        f"{origin}/api/lti/courses/{world.course_id}/line_items", headers=bearer(token)
    )

    # The token's audience is the configured base URL (127.0.0.1), accepted on every host.
    assert response.status_code == 200
    assert response.json()[0]["id"].startswith(f"{origin}/api/lti/courses/")
    assert response.headers["link"].startswith(f"<{origin}/")


def test_seed_demo_returns_a_platform_registration_on_the_base_url() -> None:
    state = SandboxState(SandboxConfig(base_url="http://127.0.0.1:8001"))

    demo = seed_demo(state, tool_jwks_url="http://127.0.0.1:8000/.well-known/jwks.json")

    registration = demo.platform_registration()
    assert registration["issuer"] == "http://127.0.0.1:8001"
    assert registration["token_url"] == "http://127.0.0.1:8001/login/oauth2/token"
    assert registration["jwks_url"] == "http://127.0.0.1:8001/api/lti/security/jwks"
    assert registration["allowed_hosts"] == ["127.0.0.1"]
    assert registration["deployment_ids"] == [demo.deployment_id]
    assert demo.line_item_url.startswith(demo.line_items_url + "/")
    assert len(demo.students) == 3
    key = state.developer_key(demo.client_id)
    assert key.public_jwk_url == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert state.assignment(demo.assignment_id).points_possible == 10
