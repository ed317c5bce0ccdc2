"""Health, readiness, the tool's JWKS, and how errors are answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import RSAKey
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import AppContext
from app.lti.keys import ToolKeyring
from app.main import create_app
from tests.conftest import make_settings
from tests.support.auth import ADMIN_KEY, bearer, teacher_token


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_when_database_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/none"


async def get_on_database(
    database_url: str, path: str, tmp_path: Path, keys_dir: Path, **headers: str
) -> httpx.Response:
    """One request to an app whose database is `database_url` (unreachable, empty, …)."""
    context = AppContext.build(make_settings(database_url, tmp_path, keys_dir))
    transport = httpx.ASGITransport(app=create_app(context=context), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=headers)
    finally:
        await context.close()


async def test_readyz_is_503_when_the_database_is_unreachable(
    tmp_path: Path, tool_keys_dir: Path
) -> None:
    response = await get_on_database(UNREACHABLE_DATABASE, "/readyz", tmp_path, tool_keys_dir)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


async def test_readyz_is_503_when_the_schema_was_never_migrated(
    tmp_path: Path, tool_keys_dir: Path
) -> None:
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    response = await get_on_database(empty, "/readyz", tmp_path, tool_keys_dir)
    assert response.status_code == 503
    assert response.json()["status"] == "schema_behind"


async def test_a_request_while_the_database_is_down_gets_a_503_problem(
    tmp_path: Path, tool_keys_dir: Path
) -> None:
    response = await get_on_database(
        UNREACHABLE_DATABASE, "/v1/platforms", tmp_path, tool_keys_dir, **bearer(ADMIN_KEY)
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"


async def test_jwks_publishes_the_current_key_with_its_rfc7638_thumbprint(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert len(keys) == 1
    published = keys[0]
    assert "d" not in published and "p" not in published  # public parts only
    assert published["alg"] == "RS256"
    assert published["kid"] == RSAKey.import_key(published).thumbprint()
    assert published["kid"] == context.keyring.current.kid


def test_a_key_folder_gets_a_first_key_with_private_permissions(tmp_path: Path) -> None:
    keyring = ToolKeyring.load(tmp_path / "keys")
    files = list((tmp_path / "keys").glob("*.pem"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o077 == 0
    assert keyring.previous == ()


async def test_malformed_json_is_a_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms",
        content=b'{"issuer": ',
        headers={**bearer(ADMIN_KEY), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed_json"


async def test_wrong_types_list_each_bad_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms",
        json={"issuer": 5, "client_id": ["x"], "deployment_ids": "1"},
        headers=bearer(ADMIN_KEY),
    )
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"body.issuer", "body.client_id", "body.deployment_ids", "body.token_url"} <= fields


async def test_oversized_body_is_refused_with_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms",
        content=b"x" * 1_100_000,
        headers={**bearer(ADMIN_KEY), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_every_answer_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = [(await client.get("/healthz")).headers["x-request-id"] for _ in range(3)]
    assert all(len(one) == 32 and int(one, 16) >= 0 for one in generated)
    assert len(set(generated)) == 3, "each request gets an id of its own"


async def test_a_teacher_token_cannot_use_admin_endpoints(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/platforms", headers=bearer(teacher_token("t-1")))
    assert response.status_code == 403


async def test_an_expired_or_forged_teacher_token_is_401(client: httpx.AsyncClient) -> None:
    expired = await client.get(
        "/v1/platforms", headers=bearer(teacher_token("t-1", expires_in=-120))
    )
    assert expired.status_code == 401
    forged = await client.get(
        "/v1/platforms", headers=bearer(teacher_token("t-1", secret="another-secret-" * 3))
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "token_invalid"


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/platforms" in schema["paths"]
    assert "/.well-known/jwks.json" in schema["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200


async def test_metrics_expose_queue_depth_in_prometheus_format(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'passback_jobs{status="pending"} 0.0' in response.text
    assert "passback_oldest_pending_job_age_seconds 0.0" in response.text


async def test_a_value_the_database_cannot_store_is_a_422_not_a_503(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/platforms/bad%00id", headers=bearer(ADMIN_KEY))
    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"


@contextlib.contextmanager
def statements_seen(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs (observed, not mocked)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def _queue_reads(statements: list[str]) -> int:
    return sum(1 for sql in statements if "passback_jobs" in sql and "GROUP BY" in sql)


async def test_200_concurrent_metrics_scrapes_read_the_queue_once(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    with statements_seen(context.engine) as statements:
        answers = await asyncio.gather(*(client.get("/metrics") for _ in range(200)))
        assert {answer.status_code for answer in answers} == {200}
        assert _queue_reads(statements) == 1
        again = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
        assert {answer.status_code for answer in again} == {200}
        assert _queue_reads(statements) == 1, "figures younger than a few seconds are reused"
    assert 'passback_jobs{status="pending"} 0.0' in answers[-1].text


async def test_a_burst_of_1000_readyz_all_answer_200_with_one_database_check(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    with statements_seen(context.engine) as statements:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(1000)))
    assert [answer.status_code for answer in answers] == [200] * 1000
    version_reads = [sql for sql in statements if "alembic_version" in sql]
    assert 1 <= len(version_reads) <= 2


async def test_metrics_want_the_metrics_token_when_one_is_set(
    database_url: str, tmp_path: Path, tool_keys_dir: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, tool_keys_dir, metrics_token="scrape-token-0123456789"
    )
    context = AppContext.build(settings)
    transport = httpx.ASGITransport(app=create_app(context=context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            anonymous = await client.get("/metrics")
            assert anonymous.status_code == 401
            assert anonymous.headers["content-type"] == "application/problem+json"
            wrong = await client.get("/metrics", headers=bearer("another-token"))
            assert wrong.status_code == 401
            scraped = await client.get("/metrics", headers=bearer("scrape-token-0123456789"))
            assert scraped.status_code == 200
            assert "passback_jobs" in scraped.text
    finally:
        await context.close()
