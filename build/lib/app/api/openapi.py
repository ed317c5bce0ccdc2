"""The OpenAPI document, with every error answer described as the problem document it is.

FastAPI documents its own `HTTPValidationError` for 422; our handlers answer
`application/problem+json` instead, and a body that is not JSON gets 400. One pass over
the generated document keeps every route honest without repeating it in each decorator.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.problems import PROBLEM_MEDIA_TYPE, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _problem_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def _fix_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, answer in list(responses.items()):
        if status.startswith(("4", "5")) and PROBLEM_MEDIA_TYPE not in answer.get("content", {}):
            responses[status] = _problem_answer(answer.get("description") or "Error")
    if "requestBody" in operation:
        responses.setdefault("400", _problem_answer("The body is not valid JSON"))
        responses.setdefault("413", _problem_answer("The body is too large"))
        responses.setdefault("422", _problem_answer("A field is missing or not valid"))


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for name, definition in (
            Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            schemas.setdefault(name, definition)
        schemas["Problem"].pop("$defs", None)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    _fix_operation(operation)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
