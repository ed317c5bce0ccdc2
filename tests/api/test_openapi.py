"""The OpenAPI document tells the truth about the API, and /docs works without a network."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright

from app.api.openapi import PROBLEM_SCHEMA, REQUIRED_SCOPE_EXTENSION
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, OUTPUT
from tests.support.auth import EVENTS_KEY, bearer
from tests.support.processes import ServiceProcess, service_env, start_service

PROBLEM_MEDIA_TYPE = "application/problem+json"


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


async def test_error_answers_are_problem_details_under_problem_json(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    schemas = document["components"]["schemas"]
    assert {"code", "detail", "status", "title"} <= set(schemas[PROBLEM_SCHEMA]["properties"])
    assert "HTTPValidationError" not in schemas and "Problem" not in schemas
    for path, method, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if not status.startswith(("4", "5")) or (path, status) == ("/readyz", "503"):
                continue
            assert list(answer["content"]) == [PROBLEM_MEDIA_TYPE], (path, method, status)
            schema = answer["content"][PROBLEM_MEDIA_TYPE]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}


async def test_the_documented_submission_event_example_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    """What Swagger's "Try it out" sends by default."""
    document = await _document(client)
    body = document["paths"]["/v1/submission-events"]["post"]["requestBody"]
    example = body["content"]["application/json"]["example"]
    answer = await client.post("/v1/submission-events", json=example, headers=bearer(EVENTS_KEY))
    assert answer.status_code == 202, answer.text
    assert answer.json()["event_id"] == example["event_id"]


async def test_operations_have_explicit_ids_tags_with_descriptions_and_stated_access(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", operation_id) for operation_id in ids), ids
    assert {"submitEvent", "previewPassback", "sendPassback", "createLaunch"} <= set(ids)
    described = {tag["name"] for tag in document["tags"] if tag.get("description")}
    for path, method, operation in _operations(document):
        assert set(operation["tags"]) <= described, (path, method)
        access = operation[REQUIRED_SCOPE_EXTENSION]
        assert f"**Access:** {access}." in operation["description"]
    by_id = {operation["operationId"]: operation for _, _, operation in _operations(document)}
    assert "scope `events`" in by_id["submitEvent"][REQUIRED_SCOPE_EXTENSION]
    assert "scope `admin`" in by_id["listJobs"][REQUIRED_SCOPE_EXTENSION]
    assert "teacher token" in by_id["previewPassback"][REQUIRED_SCOPE_EXTENSION]
    assert "scope `events`" in by_id["putFormative"][REQUIRED_SCOPE_EXTENSION]


async def test_headers_and_query_parameters_are_documented(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    for path, method, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (path, method, parameter["name"])
    send = document["paths"]["/v1/formatives/{formative_id}/passback"]["post"]
    names = {parameter["name"] for parameter in send["parameters"]}
    assert {"Idempotency-Key", "X-Acting-Teacher-Id"} <= names
    jobs = document["paths"]["/v1/passback/jobs"]["get"]
    assert {"formative_id", "student_id", "status", "cursor", "limit"} <= {
        parameter["name"] for parameter in jobs["parameters"] if parameter["in"] == "query"
    }


async def test_the_document_cites_no_specification_and_has_the_package_version(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    assert "SPEC" not in json.dumps(document)
    assert document["info"]["version"] == version("passback")


async def test_docs_load_swagger_ui_from_the_service_itself(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and all(asset.startswith("/") for asset in assets), assets
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset


@pytest.fixture
async def service(tmp_path: Path, tool_keys_dir: Path) -> ServiceProcess:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'passback.db'}"
    env = service_env(database_url, var_dir=tmp_path, keys_dir=tool_keys_dir)
    return await start_service(env, log_path=tmp_path / "service.log")


async def test_docs_render_in_a_browser_with_no_network_beyond_the_service(
    service: ServiceProcess,
) -> None:
    outside: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 1600})

            async def only_the_service(route: Any) -> None:
                if route.request.url.startswith(service.base_url):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_the_service)
            await page.goto(f"{service.base_url}/docs")
            await page.get_by_text("submitEvent").first.wait_for(timeout=20_000)
            await page.get_by_text("Report a submission event").first.wait_for()
            OUTPUT.mkdir(exist_ok=True)
            await page.screenshot(path=str(OUTPUT / "docs.png"), full_page=False)
            await browser.close()
    finally:
        await service.terminate()
    assert outside == []
