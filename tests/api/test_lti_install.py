"""The install routes before the operator has set the tool's URLs, and without an invite."""

from __future__ import annotations

import httpx


async def test_canvas_json_says_which_settings_are_missing(client: httpx.AsyncClient) -> None:
    response = await client.get("/lti/canvas.json")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "not_configured"
    assert "PASSBACK_PUBLIC_BASE_URL" in problem["detail"]
    assert "PASSBACK_TOOL_LAUNCH_URL" in problem["detail"]
    assert "PASSBACK_TOOL_LOGIN_URL" in problem["detail"]


async def test_registration_without_an_invite_is_refused_with_a_page(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/lti/registration",
        params={"openid_configuration": "https://canvas.example/config", "registration_token": "t"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "<code>invite_missing</code>" in response.text
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_registration_before_the_tool_urls_are_set_says_so(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/lti/registration", params={"invite": "x"})

    assert response.status_code == 503
    assert "<code>not_configured</code>" in response.text
    assert "PASSBACK_TOOL_LAUNCH_URL" in response.text


async def test_a_registration_parameter_too_long_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/lti/registration", params={"invite": "x" * 5000})

    assert response.status_code == 400
    assert "<code>invalid_request</code>" in response.text
