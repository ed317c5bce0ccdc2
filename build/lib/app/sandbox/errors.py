"""Canvas's error answers, as exceptions raised inside the sandbox and rendered at the edge.

Canvas uses four body shapes (canvas-ags.md §2); each has its own exception class:

- A `LtiServiceError`: ``{"errors": {"type": "<status symbol>", "message": "..."}}``
- B `ApiError` and subclasses: ``{"errors": [{"message": "..."}]}`` (validation errors add
  ``field`` and ``error_code``)
- C `EmptyError`: the status alone, no body
- D `LineItemBadRequest`: ``{"error": "..."}``
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from starlette.responses import Response

from app.sandbox.rendering import canvas_json

STATUS_SYMBOLS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    412: "precondition_failed",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

RESOURCE_NOT_FOUND = "The specified resource does not exist."


def status_symbol(status: int) -> str:
    return STATUS_SYMBOLS.get(status, "error")


class PlatformError(Exception, ABC):
    """An error the sandbox answers the way Canvas would."""

    status: int

    @abstractmethod
    def response(self) -> Response:
        """The answer Canvas would give, in its shape for this kind of error."""


class LtiServiceError(PlatformError):
    """Shape A, from Canvas's LtiServices concern. Canvas's default status is 412."""

    def __init__(self, message: str, status: int = 412) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def response(self) -> Response:
        body = {"errors": {"type": status_symbol(self.status), "message": self.message}}
        return canvas_json(body, status=self.status)


class ApiError(PlatformError):
    """Shape B, Canvas's generic API error: a list of messages."""

    def __init__(self, message: str, status: int, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code

    def response(self) -> Response:
        error: dict[str, str] = {"message": self.message}
        if self.error_code is not None:
            error["error_code"] = self.error_code
        return canvas_json({"errors": [error]}, status=self.status)


class NotFound(ApiError):
    """404 shape B: a record that does not exist (or is not visible)."""

    def __init__(self) -> None:
        super().__init__(RESOURCE_NOT_FOUND, 404)


class ParamMissing(ApiError):
    """400 shape B: a required parameter is absent or blank."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is missing", 400)


class UnexpectedError(ApiError):
    """Shape B for anything else: ``"An error occurred."`` with the status name."""

    def __init__(self, status: int = 500) -> None:
        super().__init__("An error occurred.", status, status_symbol(status))


@dataclass(frozen=True)
class FieldError:
    field: str | None
    message: str
    error_code: str


class ValidationFailed(PlatformError):
    """422 shape B: model validation failed (Rails default messages)."""

    status = 422

    def __init__(self, *errors: FieldError) -> None:
        super().__init__("; ".join(f"{e.field} {e.message}" for e in errors))
        self.errors = errors

    def response(self) -> Response:
        body = {
            "errors": [
                {"field": e.field, "message": e.message, "error_code": e.error_code}
                for e in self.errors
            ]
        }
        return canvas_json(body, status=422)


class EmptyError(PlatformError):
    """Shape C: a bare status with an empty body."""

    def __init__(self, status: int) -> None:
        super().__init__(str(status))
        self.status = status

    def response(self) -> Response:
        return Response(b"", status_code=self.status)


class LineItemBadRequest(PlatformError):
    """Shape D, only from the line items controller: ``{"error": "<message>"}``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> Response:
        return canvas_json({"error": self.message}, status=400)
