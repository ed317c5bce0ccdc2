"""Hostile and malformed requests: a bad request is a 4xx problem, never a 5xx, on both
databases; oversized bodies are cut off; credentials and scopes are enforced everywhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from app.config import Settings
from app.main import create_app
from tests.support.auth import (
    ADMIN_KEY,
    EVENTS_KEY,
    PASSBACK_KEY,
    TEACHER_TOKEN_SECRET,
    bearer,
    teacher_headers,
    teacher_token,
)

ADMIN = bearer(ADMIN_KEY)
EVENTS = bearer(EVENTS_KEY)
PROBLEM = "application/problem+json"
NUL = "a\x00b"
BEYOND_64_BITS = 2**70

JSON_BODY_ENDPOINTS = [
    ("POST", "/v1/platforms", ADMIN),
    ("PATCH", "/v1/platforms/p-1", ADMIN),
    ("POST", "/v1/launches", EVENTS),
    ("POST", "/v1/submission-events", EVENTS),
    ("POST", "/v1/formatives/fm-1/passback", teacher_headers("t-1")),
]


def assert_client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert response.json()["code"]


# --- strings the database cannot store, numbers it cannot hold ------------------------------


async def nul_in_a_platform(client: httpx.AsyncClient) -> httpx.Response:
    body = {
        "issuer": "https://canvas.example.edu",
        "client_id": "10000000000001",
        "deployment_ids": ["1"],
        "token_url": "https://canvas.example.edu/login/oauth2/token",
        "jwks_url": "https://canvas.example.edu/api/lti/security/jwks",
        "label": NUL,
    }
    return await client.post("/v1/platforms", json=body, headers=ADMIN)


def started_event(
    event_id: str, *, organization: str = "org-1", formative: str = "fm-1", teacher: str = "t-1"
) -> dict[str, Any]:
    """A student starts a formative: the smallest event there is."""
    return {
        "event_id": event_id,
        "type": "started",
        "occurred_at": "2026-11-20T14:03:11.250Z",
        "organization": {"id": organization, "license": "school_district"},
        "formative": {
            "id": formative,
            "title": "Quiz",
            "auto_passback": False,
            "teacher_ids": [teacher],
            "questions": [{"id": "q1", "points": 1, "grading": "auto"}],
        },
        "student": {"id": "s-1", "class_id": "c-1"},
        "attempt": 1,
        "score": 0,
        "max_score": 1,
    }


async def nul_in_an_event(client: httpx.AsyncClient) -> httpx.Response:
    body = started_event("evt-nul", organization=NUL)
    return await client.post("/v1/submission-events", json=body, headers=EVENTS)


async def nul_in_a_preview_path(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/v1/formatives/a%00b/passback/preview", headers=teacher_headers("t-1"))


async def nul_in_a_job_filter(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/v1/passback/jobs", params={"formative_id": NUL}, headers=ADMIN)


async def nul_in_a_batch_path(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/v1/passback/batches/a%00b", headers=ADMIN)


async def nul_in_a_platform_path(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/v1/platforms/a%00b", headers=ADMIN)


@pytest.mark.parametrize(
    "request_with_nul",
    [
        nul_in_a_platform,
        nul_in_an_event,
        nul_in_a_preview_path,
        nul_in_a_job_filter,
        nul_in_a_batch_path,
        nul_in_a_platform_path,
    ],
)
async def test_a_nul_character_is_a_client_error_not_a_database_outage(
    client: httpx.AsyncClient, request_with_nul: Any
) -> None:
    response = await request_with_nul(client)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_client_error(response)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_job_id_beyond_64_bits_is_not_found(client: httpx.AsyncClient, method: str) -> None:
    path = f"/v1/passback/jobs/{BEYOND_64_BITS}" + ("/retry" if method == "POST" else "")
    response = await client.request(method, path, headers=ADMIN)
    assert_client_error(response)


# --- bodies that are not JSON, or too large -------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"), JSON_BODY_ENDPOINTS[:3] + JSON_BODY_ENDPOINTS[4:]
)
async def test_a_body_that_is_not_utf8_json_is_malformed_json(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(
        method,
        path,
        content=b'{"label": "\xc3\x28"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "malformed_json"


@pytest.mark.parametrize(("method", "path", "headers"), JSON_BODY_ENDPOINTS)
async def test_a_truncated_json_body_is_a_400_or_422_problem(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(
        method,
        path,
        content=b'{"a": [1, 2',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert_client_error(response)


@pytest.mark.parametrize(("method", "path", "headers"), JSON_BODY_ENDPOINTS)
async def test_a_body_nested_thousands_of_levels_deep_is_malformed_json(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    deep = b'{"a": ' * 5_000 + b"1" + b"}" * 5_000
    response = await client.request(
        method, path, content=deep, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert_client_error(response)
    assert response.json()["code"] == "malformed_json"


@pytest.mark.parametrize(("method", "path", "headers"), JSON_BODY_ENDPOINTS)
async def test_an_oversized_body_is_refused_before_it_is_read(
    client: httpx.AsyncClient, settings: Settings, method: str, path: str, headers: dict[str, str]
) -> None:
    too_large = b"[" + b"1," * settings.max_body_bytes + b"1]"
    response = await client.request(
        method, path, content=too_large, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert_client_error(response)
    assert response.json()["code"] == "payload_too_large"


def streamed_case(method: str, path: str, headers: dict[str, str]) -> Any:
    return pytest.param(method, path, headers)


@pytest.mark.parametrize(
    ("method", "path", "headers"), [streamed_case(*endpoint) for endpoint in JSON_BODY_ENDPOINTS]
)
async def test_an_oversized_body_without_a_length_is_cut_off_while_streaming(
    client: httpx.AsyncClient, settings: Settings, method: str, path: str, headers: dict[str, str]
) -> None:
    chunk = b"1," * 65_536

    async def endless_json() -> AsyncIterator[bytes]:
        yield b"["
        sent = 0
        while sent <= settings.max_body_bytes:
            yield chunk
            sent += len(chunk)
        yield b"1]"

    response = await client.request(
        method,
        path,
        content=endless_json(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert_client_error(response)


# --- who may call what ------------------------------------------------------------------------

ENDPOINTS_BY_AUDIENCE = {
    "admin": [
        ("GET", "/v1/platforms"),
        ("POST", "/v1/platforms"),
        ("GET", "/v1/platforms/p-1"),
        ("PATCH", "/v1/platforms/p-1"),
        ("DELETE", "/v1/platforms/p-1"),
        ("GET", "/v1/passback/jobs"),
        ("GET", "/v1/passback/jobs/1"),
        ("POST", "/v1/passback/jobs/1/retry"),
    ],
    "events": [("POST", "/v1/launches"), ("POST", "/v1/submission-events")],
    "teacher": [
        ("GET", "/v1/formatives/fm-1/passback/preview"),
        ("POST", "/v1/formatives/fm-1/passback"),
    ],
}


def forged_teacher_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "t-1", "aud": "passback", "iat": now, "exp": now + 600}
    rsa = RSAKey.generate_key(2048)
    unsigned = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("x" * 32))
    header, payload, _ = unsigned.split(".")
    none_header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    return {
        "wrong_secret": jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("w" * 32)),
        "alg_none": f"{none_header}.{payload}.",
        "signature_stripped": f"{header}.{payload}.",
        "expired": teacher_token("t-1", expires_in=-3600),
        "wrong_audience": teacher_token("t-1", audience="another-service"),
        "rs256_without_configured_keys": jwt.encode({"alg": "RS256"}, claims, rsa),
        "no_expiry": jwt.encode(
            {"alg": "HS256"},
            {"sub": "t-1", "aud": "passback"},
            OctKey.import_key(TEACHER_TOKEN_SECRET),
        ),
    }


@pytest.mark.parametrize("forgery", list(forged_teacher_tokens()))
async def test_forged_teacher_tokens_are_refused_with_401(
    client: httpx.AsyncClient, forgery: str
) -> None:
    token = forged_teacher_tokens()[forgery]
    for method, path in ENDPOINTS_BY_AUDIENCE["teacher"]:
        response = await client.request(method, path, json={}, headers=bearer(token))
        assert response.status_code == 401, (forgery, path, response.text)
        assert_client_error(response)


@pytest.mark.parametrize(
    ("credential", "allowed"),
    [
        (EVENTS_KEY, "events"),
        (PASSBACK_KEY, "teacher"),
        (ADMIN_KEY, "admin"),
        (teacher_token("t-1"), "teacher"),
        ("not-a-key", None),
        ("", None),
    ],
    ids=["events-key", "passback-key", "admin-key", "teacher-token", "unknown-key", "empty"],
)
async def test_every_endpoint_refuses_callers_without_its_scope(
    client: httpx.AsyncClient, credential: str, allowed: str | None
) -> None:
    headers = {**bearer(credential), "X-Acting-Teacher-Id": "t-1"}
    for audience, endpoints in ENDPOINTS_BY_AUDIENCE.items():
        if audience == allowed:
            continue
        for method, path in endpoints:
            response = await client.request(method, path, json={}, headers=headers)
            expected = 401 if allowed is None else 403
            assert response.status_code == expected, (credential, method, path, response.text)
            assert_client_error(response)


async def test_a_teacher_token_cannot_borrow_another_teachers_identity_by_header(
    client: httpx.AsyncClient,
) -> None:
    """`X-Acting-Teacher-Id` is for `passback` keys; a teacher token speaks for its `sub`."""
    first = await client.post(
        "/v1/submission-events",
        json=started_event("evt-owner", formative="fm-owned", teacher="t-owner"),
        headers=EVENTS,
    )
    assert first.status_code == 202, first.text
    intruder = {**teacher_headers("t-intruder"), "X-Acting-Teacher-Id": "t-owner"}
    response = await client.get("/v1/formatives/fm-owned/passback/preview", headers=intruder)
    assert response.status_code == 403
    assert "s-1" not in response.text
    owner = await client.get(
        "/v1/formatives/fm-owned/passback/preview", headers=teacher_headers("t-owner")
    )
    assert owner.status_code == 200, owner.text


# --- the documents promise what the answers are ----------------------------------------------


def test_every_documented_error_answer_is_a_problem_document() -> None:
    document = create_app(Settings(database_url="sqlite+aiosqlite://")).openapi()
    offenders = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith("4") and PROBLEM not in answer.get("content", {}):
                    offenders.append(f"{method.upper()} {path} {status}")
            if "requestBody" in operation and "400" not in operation["responses"]:
                offenders.append(f"{method.upper()} {path} 400 (malformed JSON) undocumented")
    assert not offenders, offenders
