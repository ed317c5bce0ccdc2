"""The platform registry API, on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.auth import ADMIN_KEY, EVENTS_KEY, bearer

ADMIN = bearer(ADMIN_KEY)


def registration(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "issuer": "https://canvas.instructure.com",
        "client_id": "10000000000042",
        "deployment_ids": ["1:abc"],
        "token_url": "https://school.instructure.com/login/oauth2/token",
        "jwks_url": "https://sso.canvaslms.com/api/lti/security/jwks",
        "allowed_hosts": ["*.instructure.com"],
        "label": "District Canvas",
    }
    body.update(overrides)
    return body


async def test_registering_a_platform_returns_it_with_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/platforms", json=registration(), headers=ADMIN)
    assert response.status_code == 201, response.text
    platform = response.json()
    assert platform["token_audience"] == "https://school.instructure.com/login/oauth2/token"
    assert platform["active"] is True
    assert platform["allowed_hosts"] == ["*.instructure.com"]

    listed = await client.get("/v1/platforms", headers=ADMIN)
    assert [item["id"] for item in listed.json()] == [platform["id"]]
    read = await client.get(f"/v1/platforms/{platform['id']}", headers=ADMIN)
    assert read.json() == platform


async def test_allowed_hosts_default_to_the_token_url_host(client: httpx.AsyncClient) -> None:
    body = registration(allowed_hosts=None)
    response = await client.post("/v1/platforms", json=body, headers=ADMIN)
    assert response.json()["allowed_hosts"] == ["school.instructure.com"]


async def test_same_issuer_and_client_id_twice_is_a_conflict(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/platforms", json=registration(), headers=ADMIN)
    assert first.status_code == 201
    second = await client.post("/v1/platforms", json=registration(), headers=ADMIN)
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["code"] == "platform_exists"


async def test_patch_changes_only_the_given_fields(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/platforms", json=registration(), headers=ADMIN)).json()
    response = await client.patch(
        f"/v1/platforms/{created['id']}",
        json={"label": "Renamed", "token_audience": "https://aud.example/token"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["label"] == "Renamed"
    assert changed["token_audience"] == "https://aud.example/token"
    assert changed["client_id"] == created["client_id"]


async def test_delete_deactivates_and_keeps_the_record(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/platforms", json=registration(), headers=ADMIN)).json()
    response = await client.delete(f"/v1/platforms/{created['id']}", headers=ADMIN)
    assert response.status_code == 204
    read = await client.get(f"/v1/platforms/{created['id']}", headers=ADMIN)
    assert read.json()["active"] is False


async def test_unknown_platform_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/platforms/nope", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["code"] == "platform_not_found"


async def test_http_token_url_is_refused_unless_host_is_insecure(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/platforms",
        json=registration(token_url="http://canvas.example.edu/login/oauth2/token"),
        headers=ADMIN,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "insecure_url"

    loopback = await client.post(
        "/v1/platforms",
        json=registration(
            token_url="http://127.0.0.1:9/login/oauth2/token",
            jwks_url="http://127.0.0.1:9/api/lti/security/jwks",
            allowed_hosts=["127.0.0.1"],
        ),
        headers=ADMIN,
    )
    assert loopback.status_code == 201, loopback.text


async def test_bad_host_pattern_lists_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms", json=registration(allowed_hosts=["https://x/y"]), headers=ADMIN
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["field"] == "body.allowed_hosts.0"


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms", json=registration(secret_backdoor=True), headers=ADMIN
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.secret_backdoor"


async def test_platform_endpoints_need_the_admin_scope(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/platforms")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "unauthorized"
    wrong_key = await client.get("/v1/platforms", headers=bearer("not-a-key"))
    assert wrong_key.status_code == 401
    wrong_scope = await client.get("/v1/platforms", headers=bearer(EVENTS_KEY))
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["code"] == "insufficient_scope"
