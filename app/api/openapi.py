"""The OpenAPI document and the offline docs page.

FastAPI generates the document from the routes; one pass over it here keeps it honest without
repeating the same facts in every decorator:

- every error answer is the `ProblemDetails` document under `application/problem+json` (what
  the handlers send), never FastAPI's `HTTPValidationError` under `application/json`;
- operation ids are explicit (`submitEvent`, `previewPassback`, …), tags have descriptions;
- each operation says who may call it (which API-key scope, or a teacher token);
- `X-Acting-Teacher-Id` is documented where it applies, and parameters say what they mean;
- the submission-event body has an example that is accepted as is (Swagger's "Try it out");
- `info.version` is the package's version.

`/docs` is Swagger UI served from the assets `fastapi-offline` ships, so it works without a
CDN (offline machines, strict content security policies).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.api.auth import ACTING_TEACHER_HEADER
from app.api.problems import PROBLEM_MEDIA_TYPE, Problem

PROBLEM_SCHEMA = "ProblemDetails"
_PROBLEM_REF = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
SWAGGER_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_PATH = "/docs/assets"

TAGS: list[dict[str, str]] = [
    {
        "name": "events",
        "description": "Formative's backend reports submissions; eligible ones are passed back "
        "automatically. API key with scope `events`.",
    },
    {
        "name": "launches",
        "description": "A student's launch from Canvas, verified, tells where the grade goes. "
        "API key with scope `events`.",
    },
    {
        "name": "manual passback",
        "description": "A teacher previews and sends grades. A teacher token of a teacher of "
        f"the formative, or an API key with scope `passback` naming the teacher in "
        f"`{ACTING_TEACHER_HEADER}`.",
    },
    {
        "name": "formatives",
        "description": "What Formative knows of a formative (title, teachers, classes) before "
        "or besides events. API key with scope `events`.",
    },
    {
        "name": "jobs",
        "description": "Every delivery to Canvas with its attempts; retry a failed one. API "
        "key with scope `admin`.",
    },
    {
        "name": "platforms",
        "description": "The Canvas (or other LTI 1.3) platforms the tool is registered with. "
        "API key with scope `admin`.",
    },
    {
        "name": "lti",
        "description": "Installing the tool in a platform: the Canvas developer-key JSON "
        "(public) and LTI Dynamic Registration (opened by the platform from an operator's "
        "invite).",
    },
    {
        "name": "system",
        "description": "Liveness, readiness, the tool's public keys (public), and Prometheus "
        "metrics (operators).",
    },
]

# Operation ids are the endpoint functions' names in camelCase, except where that name says
# too little on its own.
OPERATION_IDS = {
    "preview": "previewPassback",
    "send_grades": "sendPassback",
    "retry": "retryJob",
    "healthz": "getLiveness",
    "readyz": "getReadiness",
    "jwks": "getToolJwks",
    "metrics_endpoint": "getMetrics",
}

_TEACHER_ACCESS = (
    "a teacher token whose teacher is among the formative's `teacher_ids`, or an API key with "
    f"scope `passback` naming that teacher in `{ACTING_TEACHER_HEADER}`"
)
# Who may call each operation: by tag, with the exceptions by operation id.
ACCESS_BY_TAG = {
    "events": "an API key with scope `events`",
    "launches": "an API key with scope `events`",
    "manual passback": _TEACHER_ACCESS,
    "formatives": "an API key with scope `events`",
    "jobs": "an API key with scope `admin`",
    "platforms": "an API key with scope `admin`",
    "system": "nothing (public)",
    "lti": "nothing (public)",
}
ACCESS_BY_OPERATION = {
    "readBatch": _TEACHER_ACCESS + "; or an API key with scope `admin`",
    "getMetrics": "nothing, or `Authorization: Bearer <PASSBACK_METRICS_TOKEN>` when that is "
    "set (restrict it to operators)",
}
REQUIRED_SCOPE_EXTENSION = "x-required-access"

PARAMETER_DESCRIPTIONS = {
    "formative_id": "Formative's id of the formative.",
    "student_id": "Formative's id of the student.",
    "status": "Only jobs with this status.",
    "cursor": "The `next_cursor` of the previous page.",
    "limit": "Jobs per page.",
    "mode": "`grades` (scores) or `complete_incomplete`.",
    "Idempotency-Key": "Makes the send safe to repeat: the same key with the same body "
    "answers the same batch; with another body, 422 `idempotency_key_reused`.",
    "platform_id": "The platform registration's id.",
    "batch_id": "The batch's id, as the send answered it.",
    "job_id": "The job's id.",
}
ACTING_TEACHER_PARAMETER = {
    "name": ACTING_TEACHER_HEADER,
    "in": "header",
    "required": False,
    "description": "With an API key of scope `passback`: Formative's id of the teacher the "
    "request acts for (required then; ignored with a teacher token).",
    "schema": {"type": "string", "maxLength": 255},
}

# Accepted as is by POST /v1/submission-events: "Try it out" answers 202 (`not_eligible`
# until the student has launched from Canvas).
SUBMISSION_EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": "evt-7f3a",
    "type": "submitted",
    "occurred_at": "2026-11-20T14:03:11.250Z",
    "organization": {"id": "org-9", "license": "school_district"},
    "formative": {
        "id": "fm-42",
        "title": "Fractions quiz",
        "auto_passback": True,
        "teacher_ids": ["t-1"],
        "questions": [{"id": "q1", "points": 2, "grading": "auto"}],
    },
    "student": {"id": "s-5", "class_id": "c-3", "name": "Ada L."},
    "attempt": 1,
    "submitted_by": "student",
    "submitted_at": "2026-11-20T14:03:10.900Z",
    "score": 7,
    "max_score": 10,
    "response_url": "https://formative.example/r/abc",
}

_SPEC_REFERENCE = re.compile(r"\s*\(SPEC §[^)]*\)|\s*SPEC §[\d.]+")


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function`: explicit ids instead of path-derived ones."""
    if route.name in OPERATION_IDS:
        return OPERATION_IDS[route.name]
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _problem_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def _is_problem(answer: dict[str, Any]) -> bool:
    """An error answer documented as FastAPI's validation error, as our `Problem` model, or
    with no schema at all (our handlers answer those with a problem document)."""
    schemas = [media.get("schema") for media in answer.get("content", {}).values()]
    refs = [schema.get("$ref", "") for schema in schemas if schema]
    return not refs or any(
        ref.endswith(("/Problem", "/HTTPValidationError", f"/{PROBLEM_SCHEMA}")) for ref in refs
    )


def _fix_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, answer in list(responses.items()):
        if status.startswith(("4", "5")) and _is_problem(answer):
            responses[status] = _problem_answer(answer.get("description") or "Error")
    if "requestBody" in operation:
        responses.setdefault("400", _problem_answer("The body is not valid JSON"))
        responses.setdefault("413", _problem_answer("The body is too large"))
        responses.setdefault("422", _problem_answer("A field is missing or not valid"))


def _access(operation: dict[str, Any]) -> str | None:
    """Who may call the operation: by its id, else by its most specific tag (a route's own
    tags come after its router's)."""
    tags = operation.get("tags") or []
    return ACCESS_BY_OPERATION.get(operation.get("operationId", "")) or next(
        (ACCESS_BY_TAG[tag] for tag in reversed(tags) if tag in ACCESS_BY_TAG), None
    )


def _state_access(operation: dict[str, Any]) -> None:
    access = _access(operation)
    if access is None:
        return
    operation[REQUIRED_SCOPE_EXTENSION] = access
    statement = f"**Access:** {access}."
    description = operation.get("description", "")
    operation["description"] = f"{statement}\n\n{description}" if description else statement


def _fix_parameters(operation: dict[str, Any]) -> None:
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    for parameter in parameters:
        if not parameter.get("description") and parameter["name"] in PARAMETER_DESCRIPTIONS:
            parameter["description"] = PARAMETER_DESCRIPTIONS[parameter["name"]]
    if (_access(operation) or "").startswith(_TEACHER_ACCESS) and not any(
        parameter["name"] == ACTING_TEACHER_HEADER for parameter in parameters
    ):
        parameters.append(dict(ACTING_TEACHER_PARAMETER))
    if not parameters:
        del operation["parameters"]


def _scrub_spec_references(node: Any) -> Any:
    """Descriptions cite the specification, which is not shipped with the service."""
    if isinstance(node, dict):
        return {
            key: _SPEC_REFERENCE.sub("", value)
            if key == "description" and isinstance(value, str)
            else _scrub_spec_references(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_scrub_spec_references(item) for item in node]
    return node


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    schema["title"] = PROBLEM_SCHEMA
    return {PROBLEM_SCHEMA: schema, **definitions}


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", Problem.__name__):
        schemas.pop(unused, None)
    schemas.update(_problem_schemas())
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                _fix_responses(operation)
                _fix_parameters(operation)
                _state_access(operation)
    submit = document["paths"]["/v1/submission-events"]["post"]
    for media in submit["requestBody"]["content"].values():
        media["example"] = SUBMISSION_EVENT_EXAMPLE
    scrubbed: dict[str, Any] = _scrub_spec_references(document)
    return scrubbed


def install_openapi(app: FastAPI) -> None:
    """The document (built once, on first request) and `/docs` with local assets. Build the
    app with `docs_url=None, redoc_url=None` and `generate_unique_id_function=operation_id`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"displayOperationId": True, "tryItOutEnabled": False},
        )
