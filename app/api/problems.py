"""RFC 9457 problem details: every error answer of the API, with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

PROBLEM_MEDIA_TYPE = "application/problem+json"
# FastAPI's own words when a body cannot be decoded (not UTF-8, not JSON) before validation.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
log = logging.getLogger("passback.api")


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the bad field, e.g. `body.student.id`.")
    message: str
    type: str


class Problem(BaseModel):
    """An error answer (RFC 9457)."""

    type: str = Field(default="about:blank", description="A URI naming the problem type.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable code, e.g. `platform_not_found`.")
    errors: list[FieldError] | None = Field(
        default=None, description="For validation errors: each bad field."
    )


class ProblemError(Exception):
    """Raised anywhere under the API to answer with a problem document."""

    def __init__(
        self, status: int, code: str, detail: str, *, title: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.extra = extra


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://passback.dev/problems/{code}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem answers."""
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {}},
            "description": _TITLES.get(status, "Error"),
        }
        for status in statuses
    }


def _field_path(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(
        exc.status, exc.code, exc.detail, title=exc.title, headers=headers, **exc.extra
    )


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return problem_response(400, "malformed_json", "The request body is not valid JSON.")
    fields = [
        {"field": _field_path(error.get("loc", ())), "message": error["msg"], "type": error["type"]}
        for error in errors
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return problem_response(
        422, "validation_error", f"The request is not valid: {summary}", errors=fields
    )


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
        return problem_response(400, "malformed_json", "The request body is not valid JSON.")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, code, detail, headers=headers)


def _sqlstate(exc: Exception) -> str | None:
    original = getattr(exc, "orig", None)
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return str(state) if state else None


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL data exceptions (SQLSTATE class 22: NUL bytes, out-of-range numbers) come
    from the request's values, not from an outage."""
    state = _sqlstate(exc)
    if state is not None and state.startswith("22"):
        return await _on_bad_value(request, exc)
    return await _on_database_down(request, exc)


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "database unavailable", extra={"path": request.url.path, "error": type(exc).__name__}
    )
    return problem_response(
        503,
        "database_unavailable",
        "The database cannot be reached right now, so this request may not have been "
        "recorded. Send it again unchanged shortly (repeats are safe: events are idempotent "
        "on event_id, sends on Idempotency-Key).",
        headers={"Retry-After": "1"},
    )


async def _on_conflict(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        409, "conflict", "The request conflicts with a record written at the same time; retry."
    )


async def _on_bad_value(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        422,
        "invalid_value",
        "A value in the request cannot be stored (for example a NUL character or an "
        "out-of-range number).",
    )


async def _on_client_disconnect(request: Request, _exc: Exception) -> JSONResponse:
    """The client went away before its request ended: nothing to answer, nothing went wrong
    here. (The answer below is never read.)"""
    log.info(
        "client disconnected before sending its whole request", extra={"path": request.url.path}
    )
    return problem_response(400, "client_disconnected", "The request ended before its body did.")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem_response(500, "internal_error", "An unexpected error occurred.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for database_error in (
        OperationalError,
        DBAPIError,
        PoolTimeoutError,
        ConnectionError,
        TimeoutError,
    ):
        app.add_exception_handler(database_error, _on_database_error)
    app.add_exception_handler(IntegrityError, _on_conflict)
    app.add_exception_handler(DataError, _on_bad_value)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)
