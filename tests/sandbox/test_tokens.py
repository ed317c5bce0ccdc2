"""The token endpoint behaves as canvas-ags.md §5 says Canvas's does."""

from __future__ import annotations

import httpx

from app.sandbox import Scenario
from app.sandbox.jose import parse_compact
from app.sandbox.protocol import AGS_SCOPES, SCOPE_LINEITEM, SCOPE_SCORE
from tests.sandbox.canvas import media_type
from tests.sandbox.conftest import JwksHost
from tests.support.sandbox import RunningSandbox, ToolKey, token_form

SCOPE_TEXT = (
    "A requested scope is invalid, unknown, malformed, or exceeds the scope granted by the "
    "resource owner. The following scopes were requested, but not granted: "
)


def assertion(sandbox: RunningSandbox, key: ToolKey, client_id: str, **claims: object) -> str:
    return key.client_assertion(
        client_id=client_id,
        audience=sandbox.token_url,
        now=sandbox.clock.timestamp(),
        **claims,  # type: ignore[arg-type]
    )


def assert_token_error(response: httpx.Response, status: int, error: str, description: str) -> None:
    assert response.status_code == status, response.text
    assert media_type(response) == "application/json"
    assert response.json() == {"error": error, "error_description": description}


async def test_token_grant_returns_an_hour_long_bearer_token_with_the_requested_scopes(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    scopes = [SCOPE_SCORE, SCOPE_LINEITEM]
    form = token_form(assertion(sandbox, tool_key, world.client_id), scopes)

    response = await http.post(sandbox.token_url, data=form)

    assert response.status_code == 200
    assert media_type(response) == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert body["scope"] == f"{SCOPE_SCORE} {SCOPE_LINEITEM}"
    claims = parse_compact(body["access_token"]).claims
    assert claims["scopes"] == f"{SCOPE_SCORE} {SCOPE_LINEITEM}"
    assert claims["sub"] == world.client_id
    assert claims["aud"] == sandbox.token_url
    assert claims["iss"] == sandbox.issuer
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"]
    assert sandbox.state.token_grants(world.client_id) == 1


async def test_token_request_may_be_json(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    form = token_form(assertion(sandbox, tool_key, world.client_id))

    response = await http.post(sandbox.token_url, json=form)

    assert response.status_code == 200
    assert response.json()["scope"] == " ".join(AGS_SCOPES)


async def test_assertion_is_verified_against_the_tool_jwks_url_fetched_each_time(
    sandbox: RunningSandbox, tool_key: ToolKey, jwks_host: JwksHost, http: httpx.AsyncClient
) -> None:
    jwks_host.documents["/tool/jwks.json"] = tool_key.jwks()
    key = sandbox.state.create_developer_key(public_jwk_url=jwks_host.url("/tool/jwks.json"))
    before = jwks_host.fetches

    for _ in range(2):
        form = token_form(assertion(sandbox, tool_key, key.client_id))
        response = await http.post(sandbox.token_url, data=form)
        assert response.status_code == 200, response.text

    assert jwks_host.fetches - before == 2


async def test_unreachable_tool_jwks_url_is_an_invalid_request_jwk_error(
    sandbox: RunningSandbox, tool_key: ToolKey, jwks_host: JwksHost, http: httpx.AsyncClient
) -> None:
    key = sandbox.state.create_developer_key(public_jwk_url=jwks_host.url("/nothing-here"))

    response = await http.post(
        sandbox.token_url, data=token_form(assertion(sandbox, tool_key, key.client_id))
    )

    assert_token_error(response, 400, "invalid_request", "JWK Error: Failed to fetch public key")


async def test_tool_jwks_url_serving_garbage_is_an_invalid_json_jwk_error(
    sandbox: RunningSandbox, tool_key: ToolKey, jwks_host: JwksHost, http: httpx.AsyncClient
) -> None:
    jwks_host.documents["/garbage"] = "{not json"
    key = sandbox.state.create_developer_key(public_jwk_url=jwks_host.url("/garbage"))

    response = await http.post(
        sandbox.token_url, data=token_form(assertion(sandbox, tool_key, key.client_id))
    )

    assert_token_error(response, 400, "invalid_request", "JWK Error: Invalid JSON")


async def test_missing_grant_type_is_unsupported_grant_type(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    form = token_form(assertion(sandbox, tool_key, world.client_id))
    del form["grant_type"]

    response = await http.post(sandbox.token_url, data=form)

    assert_token_error(
        response,
        400,
        "unsupported_grant_type",
        "The grant_type you requested is not currently supported",
    )


async def test_assertion_that_is_not_a_jwt_is_an_invalid_client_with_canvas_challenge(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    response = await http.post(sandbox.token_url, data=token_form("not-a-jwt"))

    assert_token_error(response, 401, "invalid_client", "unknown client")
    assert response.headers["www-authenticate"] == "Canvas OAuth 2.0"


async def test_unknown_client_is_an_invalid_client(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    form = token_form(assertion(sandbox, tool_key, "99999999999999"))

    response = await http.post(sandbox.token_url, data=form)

    assert_token_error(response, 401, "invalid_client", "unknown client")
    assert response.headers["www-authenticate"] == "Canvas OAuth 2.0"


async def test_inactive_developer_key_is_an_invalid_client(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    sandbox.state.update_developer_key(world.client_id, active=False)

    response = await http.post(
        sandbox.token_url, data=token_form(assertion(sandbox, tool_key, world.client_id))
    )

    assert_token_error(response, 401, "invalid_client", "unknown client")


async def test_assertion_for_another_audience_is_rejected_as_invalid_aud(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    signed = tool_key.client_assertion(
        client_id=world.client_id,
        audience="https://canvas.instructure.com/login/oauth2/token",
        now=sandbox.clock.timestamp(),
    )

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(response, 400, "invalid_request", "the 'aud' is invalid")


async def test_assertion_audience_may_be_a_list_containing_the_token_url(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    signed = tool_key.client_assertion(
        client_id=world.client_id,
        audience=["https://elsewhere.example", sandbox.token_url],
        now=sandbox.clock.timestamp(),
    )

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert response.status_code == 200, response.text


async def test_assertion_older_than_300_seconds_is_rejected(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    now = sandbox.clock.timestamp()
    signed = assertion(sandbox, tool_key, world.client_id, iat=now - 301, exp=now + 600)

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(
        response, 400, "invalid_request", "the 'iat' must be less than 300 seconds old"
    )


async def test_assertion_issued_more_than_30_seconds_ahead_is_rejected(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    now = sandbox.clock.timestamp()
    signed = assertion(sandbox, tool_key, world.client_id, iat=now + 60, exp=now + 600)

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(response, 400, "invalid_request", "the 'iat' must not be in the future")


async def test_expired_assertion_is_rejected(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    now = sandbox.clock.timestamp()
    signed = assertion(sandbox, tool_key, world.client_id, iat=now - 100, exp=now - 10)

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(response, 400, "invalid_request", "the JWT has expired")


async def test_several_claim_failures_are_joined_with_a_bar(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    now = sandbox.clock.timestamp()
    signed = tool_key.client_assertion(
        client_id=world.client_id, audience="https://wrong.example", iat=now - 100, exp=now - 10
    )

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(
        response, 400, "invalid_request", "the 'aud' is invalid | the JWT has expired"
    )


async def test_assertion_missing_claims_lists_them(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    signed = assertion(sandbox, tool_key, world.client_id, omit=("jti", "iss"))

    response = await http.post(sandbox.token_url, data=token_form(signed))

    assert_token_error(
        response, 400, "invalid_request", "the following assertions are missing: jti,iss"
    )


async def test_assertion_signed_by_another_key_is_rejected_as_signature_invalid(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    impostor = ToolKey.generate()

    response = await http.post(
        sandbox.token_url, data=token_form(assertion(sandbox, impostor, world.client_id))
    )

    assert_token_error(response, 400, "invalid_request", "JWS signature invalid.")


async def test_replayed_assertion_is_accepted_because_canvas_skips_the_jti_check(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    form = token_form(assertion(sandbox, tool_key, world.client_id))

    first = await http.post(sandbox.token_url, data=form)
    replay = await http.post(sandbox.token_url, data=form)

    assert (first.status_code, replay.status_code) == (200, 200)
    assert sandbox.state.token_grants(world.client_id) == 2


async def test_scope_not_enabled_on_the_key_is_invalid_scope_with_canvas_text(
    sandbox: RunningSandbox, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    key = sandbox.state.create_developer_key(public_jwk=tool_key.public_jwk(), scopes=[SCOPE_SCORE])
    extra = ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem", "https://x.example/a"]

    response = await http.post(
        sandbox.token_url,
        data=token_form(assertion(sandbox, tool_key, key.client_id), [SCOPE_SCORE, *extra]),
    )

    assert_token_error(response, 400, "invalid_scope", SCOPE_TEXT + f"{extra[0]} and {extra[1]}")
    assert sandbox.state.token_grants(key.client_id) == 0


async def test_empty_scope_is_invalid_scope_with_an_empty_list(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    form = token_form(assertion(sandbox, tool_key, world.client_id), [])

    response = await http.post(sandbox.token_url, data=form)

    assert_token_error(response, 400, "invalid_scope", SCOPE_TEXT)


async def test_client_secret_instead_of_an_assertion_is_not_supported(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": world.client_id,
        "client_secret": "hunter2",
        "scope": SCOPE_SCORE,
    }

    response = await http.post(sandbox.token_url, data=form)

    assert_token_error(
        response, 400, "invalid_request", "assertion method not supported for this grant_type"
    )
