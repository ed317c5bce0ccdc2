"""Line items (canvas-ags.md §4.1–4.3, §6 rows 10, 12, 27–30)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from app.sandbox import Scenario
from app.sandbox.protocol import (
    EXT_LAUNCH_URL,
    EXT_SUBMISSION_TYPE,
    MEDIA_LINEITEM,
    MEDIA_LINEITEM_CONTAINER,
)
from tests.sandbox.canvas import (
    assert_empty,
    assert_not_found,
    assert_shape_a,
    bearer,
    foreign_assignment,
    line_item_url,
    media_type,
)
from tests.support.sandbox import RunningSandbox, ToolKey

NO_PERMISSION = "Tool does not have permission to view line_item"


def items_url(sandbox: RunningSandbox, world: Scenario) -> str:
    return sandbox.url(f"/api/lti/courses/{world.course_id}/line_items")


def link_targets(response: httpx.Response) -> dict[str, str]:
    links = {}
    for part in response.headers["link"].split(","):
        url, rel = part.split(";")
        links[rel.strip().removeprefix('rel="').removesuffix('"')] = url.strip()[1:-1]
    return links


async def create(
    http: httpx.AsyncClient, sandbox: RunningSandbox, world: Scenario, token: str, **body: Any
) -> httpx.Response:
    return await http.post(
        items_url(sandbox, world),
        json=body,
        headers={**bearer(token), "Content-Type": MEDIA_LINEITEM},
    )


async def test_list_is_a_plain_array_of_this_tools_line_items(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    foreign_assignment(sandbox, world)

    response = await http.get(items_url(sandbox, world), headers=bearer(token))

    assert response.status_code == 200
    assert media_type(response) == MEDIA_LINEITEM_CONTAINER
    assignment = sandbox.state.assignment(world.assignment_id)
    assert response.json() == [
        {
            "id": line_item_url(sandbox, world),
            "scoreMaximum": 10.0,
            "label": "Fractions quiz",
            "resourceLinkId": assignment.resource_link_id,
        }
    ]


async def test_list_pages_with_limit_and_link_header(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    for number in range(4):
        sandbox.state.create_assignment(world.course_id, name=f"Quiz {number}")

    first = await http.get(
        items_url(sandbox, world),
        params={"limit": "2", "include[]": "launch_url"},
        headers=bearer(token),
    )
    links = link_targets(first)
    second = await http.get(links["next"], headers=bearer(token))
    last = await http.get(links["last"], headers=bearer(token))

    assert [len(r.json()) for r in (first, second, last)] == [2, 2, 1]
    assert set(links) == {"current", "next", "first", "last"}
    assert links["next"].startswith(items_url(sandbox, world) + "?")
    assert "limit=2" in links["next"] and "page=2" in links["next"]
    assert "per_page=2" in links["next"] and "include%5B%5D=launch_url" in links["next"]
    assert "prev" in link_targets(second)


async def test_list_filters_by_tag_resource_id_and_resource_link_id(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await create(http, sandbox, world, token, label="Tagged", scoreMaximum=5, tag="quiz")
    await create(http, sandbox, world, token, label="Resource", scoreMaximum=5, resourceId="r-1")
    link = sandbox.state.assignment(world.assignment_id).resource_link_id
    assert link is not None

    async def labels(**params: str) -> list[str]:
        response = await http.get(items_url(sandbox, world), params=params, headers=bearer(token))
        return [item["label"] for item in response.json()]

    assert await labels(tag="quiz") == ["Tagged"]
    assert await labels(resource_id="r-1") == ["Resource"]
    assert await labels(resource_link_id=link) == ["Fractions quiz"]


async def test_create_makes_an_assignment_and_answers_201(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    extension = {"type": "external_tool", "external_tool_url": "https://tool.example/launch"}

    response = await create(
        http,
        sandbox,
        world,
        token,
        label="Chapter 1",
        scoreMaximum=25,
        tag="chapter",
        resourceId="ch-1",
        **{EXT_SUBMISSION_TYPE: extension},
    )

    assert response.status_code == 201
    assert media_type(response) == MEDIA_LINEITEM
    body = response.json()
    item_id = body["id"].rsplit("/", 1)[1]
    assert body == {
        "id": line_item_url(sandbox, world, item_id),
        "scoreMaximum": 25.0,
        "label": "Chapter 1",
        "resourceId": "ch-1",
        "tag": "chapter",
        EXT_SUBMISSION_TYPE: extension,
    }
    line_item = sandbox.state.line_items[item_id]
    assert sandbox.state.assignment(line_item.assignment_id).points_possible == Decimal(25)


async def test_create_without_label_fails_model_validation(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await create(http, sandbox, world, token, scoreMaximum=10)

    assert response.status_code == 422
    assert media_type(response) == "application/json"
    assert response.json() == {
        "errors": [{"field": "label", "message": "can't be blank", "error_code": "blank"}]
    }


async def test_create_with_an_unknown_submission_type_is_a_bad_request(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await create(
        http,
        sandbox,
        world,
        token,
        label="X",
        scoreMaximum=1,
        **{EXT_SUBMISSION_TYPE: {"type": "paper"}},
    )

    assert response.status_code == 400
    assert media_type(response) == "application/json"
    assert response.json() == {"error": "Invalid submission_type for new assignment: paper"}


async def test_create_with_a_resource_link_adds_an_extra_line_item(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    link = sandbox.state.assignment(world.assignment_id).resource_link_id

    response = await create(
        http, sandbox, world, token, label="Extra", scoreMaximum=3, resourceLinkId=link
    )

    assert response.status_code == 201
    assert response.json()["resourceLinkId"] == link
    item_id = response.json()["id"].rsplit("/", 1)[1]
    assert sandbox.state.line_items[item_id].assignment_id == world.assignment_id


async def test_create_with_an_unknown_resource_link_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await create(
        http, sandbox, world, token, label="X", scoreMaximum=3, resourceLinkId="no-such-link"
    )

    assert_not_found(response)


async def test_create_with_another_tools_resource_link_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    foreign, _ = foreign_assignment(sandbox, world)

    response = await create(
        http,
        sandbox,
        world,
        token,
        label="X",
        scoreMaximum=3,
        resourceLinkId=foreign.resource_link_id,
    )

    assert_shape_a(
        response,
        422,
        "unprocessable_entity",
        "Resource link id points to Tool not associated with this Context",
    )


async def test_create_on_a_link_of_another_course_is_an_empty_precondition_failure(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    elsewhere = sandbox.state.create_course(tools=[world.client_id])
    assignment = sandbox.state.create_assignment(elsewhere.id, client_id=world.client_id)

    response = await create(
        http,
        sandbox,
        world,
        token,
        label="X",
        scoreMaximum=3,
        resourceLinkId=assignment.resource_link_id,
    )

    assert_empty(response, 412)


async def test_show_returns_the_line_item_with_launch_url_on_request(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.assignment(world.assignment_id).launch_url = "https://tool.example/launch"

    response = await http.get(
        line_item_url(sandbox, world), params={"include[]": "launch_url"}, headers=bearer(token)
    )

    assert response.status_code == 200
    assert media_type(response) == MEDIA_LINEITEM
    assert response.json()["id"] == line_item_url(sandbox, world)
    assert response.json()[EXT_LAUNCH_URL] == "https://tool.example/launch"


async def test_show_of_another_tools_line_item_is_a_precondition_failure(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    _, primary = foreign_assignment(sandbox, world)

    response = await http.get(line_item_url(sandbox, world, primary.id), headers=bearer(token))

    assert_shape_a(response, 412, "precondition_failed", NO_PERMISSION)


async def test_show_of_a_line_item_whose_assignment_was_deleted_is_an_empty_404(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.delete_assignment(world.assignment_id, keep_line_items=True)

    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert_empty(response, 404)


async def test_show_of_an_unknown_line_item_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.get(line_item_url(sandbox, world, "999999"), headers=bearer(token))

    assert_not_found(response)


async def test_read_only_scope_may_list_and_show_but_not_create(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    read_only = await sandbox.access_token(
        tool_key,
        world.client_id,
        ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"],
    )

    listed = await http.get(items_url(sandbox, world), headers=bearer(read_only))
    created = await create(http, sandbox, world, read_only, label="X", scoreMaximum=1)

    assert listed.status_code == 200
    assert_shape_a(created, 401, "unauthorized", "Insufficient permissions")


async def test_update_of_the_primary_line_item_changes_the_assignment_points(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.put(
        line_item_url(sandbox, world),
        json={"scoreMaximum": 20, "label": "Renamed"},
        headers={**bearer(token), "Content-Type": MEDIA_LINEITEM},
    )

    assert response.status_code == 200
    assert media_type(response) == MEDIA_LINEITEM
    assert (response.json()["scoreMaximum"], response.json()["label"]) == (20.0, "Renamed")
    assignment = sandbox.state.assignment(world.assignment_id)
    assert (assignment.points_possible, assignment.name) == (Decimal(20), "Renamed")


async def test_update_with_a_negative_maximum_fails_model_validation(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.put(
        line_item_url(sandbox, world), json={"scoreMaximum": -1}, headers=bearer(token)
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "score_maximum"


async def test_delete_of_a_coupled_line_item_is_an_empty_401(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.delete(line_item_url(sandbox, world), headers=bearer(token))

    assert_empty(response, 401)
    assert not sandbox.state.assignment(world.assignment_id).deleted


async def test_delete_of_a_tool_created_line_item_deletes_its_assignment(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    created = await create(http, sandbox, world, token, label="Temp", scoreMaximum=5)
    url = created.json()["id"]

    response = await http.delete(url, headers=bearer(token))
    shown = await http.get(url, headers=bearer(token))

    assert_empty(response, 204)
    assert_not_found(shown)
    item = sandbox.state.line_items[url.rsplit("/", 1)[1]]
    assert sandbox.state.assignment(item.assignment_id).deleted


async def test_links_drop_the_access_token_parameter(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.get(items_url(sandbox, world), params={"access_token": token})

    assert response.status_code == 200
    assert "access_token" not in response.headers["link"]
