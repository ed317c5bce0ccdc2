"""The platform's side of LTI Dynamic Registration, as Canvas plays it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.sandbox.protocol import AGS_SCOPES, SCOPE_SCORE
from tests.sandbox.conftest import JwksHost
from tests.support.sandbox import RunningSandbox, ToolKey, token_form

TOOL_URL = "https://tool.example/lti/registration?invite=abc"
TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"


def registration_body(
    jwks_uri: str = "https://tool.example/jwks", **changes: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "application_type": "web",
        "client_name": "Formative",
        "grant_types": ["client_credentials", "implicit"],
        "response_types": ["id_token"],
        "initiate_login_uri": "https://tool.example/login",
        "redirect_uris": ["https://tool.example/launch"],
        "jwks_uri": jwks_uri,
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": " ".join(AGS_SCOPES),
        TOOL_CONFIGURATION: {
            "domain": "tool.example",
            "target_link_uri": "https://tool.example/launch",
            "claims": ["sub", "iss"],
            "messages": [{"type": "LtiDeepLinkingRequest", "placements": ["assignment_selection"]}],
            "https://canvas.instructure.com/lti/privacy_level": "public",
        },
    }
    body.update(changes)
    return body


async def start(sandbox: RunningSandbox, **fields: Any) -> dict[str, Any]:
    started: dict[str, Any] = await sandbox.admin.call(
        "POST", "/registrations", json={"tool_url": TOOL_URL, **fields}
    )
    return started


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_starting_a_registration_opens_the_tool_url_with_configuration_and_token(
    sandbox: RunningSandbox,
) -> None:
    started = await start(sandbox)

    query = parse_qs(urlsplit(started["initiation_url"]).query)
    assert query["invite"] == ["abc"]
    assert query["registration_token"] == [started["registration_token"]]
    assert query["openid_configuration"] == [started["openid_configuration"]]
    assert started["openid_configuration"].startswith(sandbox.base_url)


async def test_the_openid_configuration_needs_a_live_registration_token(
    sandbox: RunningSandbox,
) -> None:
    started = await start(sandbox)
    http = sandbox.admin.http
    configuration_url = started["openid_configuration"].split("?")[0]

    anonymous = await http.get(configuration_url)
    by_bearer = await http.get(configuration_url, headers=bearer(started["registration_token"]))
    by_query = await http.get(started["openid_configuration"])

    assert anonymous.status_code == 401
    assert by_bearer.status_code == by_query.status_code == 200
    document = by_bearer.json()
    assert document["issuer"] == sandbox.issuer
    assert document["token_endpoint"] == sandbox.token_url
    assert document["jwks_uri"] == sandbox.jwks_url
    assert document["registration_endpoint"] == sandbox.url("/api/lti/registrations")
    platform = document["https://purl.imsglobal.org/spec/lti-platform-configuration"]
    assert platform["product_family_code"] == "canvas"
    sandbox.clock.advance(3601)
    assert (await http.get(started["openid_configuration"])).status_code == 401


async def test_a_registration_makes_a_developer_key_that_trusts_the_registered_jwks(
    sandbox: RunningSandbox, tool_key: ToolKey, jwks_host: JwksHost
) -> None:
    jwks_host.documents["/dynreg.json"] = tool_key.jwks()
    started = await start(sandbox)
    http = sandbox.admin.http

    created = await http.post(
        sandbox.url("/api/lti/registrations"),
        json=registration_body(jwks_host.url("/dynreg.json")),
        headers=bearer(started["registration_token"]),
    )

    assert created.status_code == 200, created.text
    answer = created.json()
    client_id, deployment_id = answer["client_id"], answer["deployment_id"]
    assert answer[TOOL_CONFIGURATION]["domain"] == "tool.example"
    assertion = tool_key.client_assertion(
        client_id=client_id, audience=sandbox.token_url, now=sandbox.clock.timestamp()
    )
    token = await http.post(sandbox.token_url, data=token_form(assertion, [SCOPE_SCORE]))
    assert token.status_code == 200, token.text
    # Installed in the root account: every course sees the tool under that deployment.
    course = await sandbox.admin.create_course(tools=[client_id])
    assert course["tools"] == [{"client_id": client_id, "deployment_id": deployment_id}]


async def test_a_registration_token_registers_once(sandbox: RunningSandbox) -> None:
    started = await start(sandbox)
    url = sandbox.url("/api/lti/registrations")
    headers = bearer(started["registration_token"])
    http = sandbox.admin.http

    first = await http.post(url, json=registration_body(), headers=headers)
    second = await http.post(url, json=registration_body(), headers=headers)
    anonymous = await http.post(url, json=registration_body())

    assert first.status_code == 200
    assert second.status_code == anonymous.status_code == 401
    assert "errorMessage" in second.json()


async def test_an_expired_registration_token_is_refused(sandbox: RunningSandbox) -> None:
    started = await start(sandbox)
    sandbox.clock.advance(3601)

    answer = await sandbox.admin.http.post(
        sandbox.url("/api/lti/registrations"),
        json=registration_body(),
        headers=bearer(started["registration_token"]),
    )

    assert answer.status_code == 401


async def test_a_registration_body_canvas_would_refuse_is_answered_422_with_each_field(
    sandbox: RunningSandbox,
) -> None:
    started = await start(sandbox, scopes_supported=[SCOPE_SCORE])
    body = registration_body(
        application_type="native",
        grant_types=["client_credentials"],
        token_endpoint_auth_method="client_secret_basic",
        redirect_uris=["not a url"],
    )
    body[TOOL_CONFIGURATION]["messages"] = [{"type": "LtiStartProctoring"}]

    answer = await sandbox.admin.http.post(
        sandbox.url("/api/lti/registrations"),
        json=body,
        headers=bearer(started["registration_token"]),
    )

    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert set(errors) == {
        "application_type",
        "grant_types",
        "token_endpoint_auth_method",
        "redirect_uris",
        "scopes",
        "lti_tool_configuration",
    }
    assert errors["scopes"][0].startswith("Invalid scopes: ")
    # A refused body does not use the token up.
    fixed = await sandbox.admin.http.post(
        sandbox.url("/api/lti/registrations"),
        json=registration_body(scope=SCOPE_SCORE),
        headers=bearer(started["registration_token"]),
    )
    assert fixed.status_code == 200, fixed.text


async def test_the_registration_page_frames_the_tool_and_listens_for_its_close_message(
    sandbox: RunningSandbox,
) -> None:
    page = await sandbox.admin.http.get(
        sandbox.url("/sandbox/registration"), params={"tool_url": TOOL_URL}
    )

    assert page.status_code == 200
    assert "<iframe" in page.text
    assert "registration_token=" in page.text
    assert "org.imsglobal.lti.close" in page.text


async def test_what_a_tool_registered_is_readable_by_the_admin(sandbox: RunningSandbox) -> None:
    started = await start(sandbox)
    created = await sandbox.admin.http.post(
        sandbox.url("/api/lti/registrations"),
        json=registration_body(),
        headers=bearer(started["registration_token"]),
    )
    client_id = created.json()["client_id"]

    registered = await sandbox.admin.call("GET", f"/registrations/{client_id}")

    assert registered["body"]["client_name"] == "Formative"
    assert registered["deployment_id"] == created.json()["deployment_id"]
    unknown = await sandbox.admin.http.get(sandbox.url("/sandbox/admin/registrations/nope"))
    assert unknown.status_code == 404
