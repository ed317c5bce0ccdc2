"""The URLs the platform emits, built on the host the client actually called."""

from __future__ import annotations

from starlette.requests import Request

from app.sandbox.protocol import PLATFORM_JWKS_PATH, TOKEN_PATH


def is_sandbox_page(path: str) -> bool:
    """The sandbox's own pages and admin API: never throttled, faulted or logged as
    platform traffic."""
    return path == "/" or path.startswith("/sandbox/")


def request_origin(request: Request) -> str:
    """``scheme://host[:port]`` of the request, as the client addressed it."""
    return f"{request.url.scheme}://{request.url.netloc}"


def token_url(origin: str) -> str:
    return f"{origin}{TOKEN_PATH}"


def platform_jwks_url(origin: str) -> str:
    return f"{origin}{PLATFORM_JWKS_PATH}"


def line_items_url(origin: str, course_id: str) -> str:
    return f"{origin}/api/lti/courses/{course_id}/line_items"


def line_item_url(origin: str, course_id: str, line_item_id: str) -> str:
    return f"{line_items_url(origin, course_id)}/{line_item_id}"


def results_url(origin: str, course_id: str, line_item_id: str) -> str:
    return f"{line_item_url(origin, course_id, line_item_id)}/results"


def result_url(origin: str, course_id: str, line_item_id: str, result_id: str) -> str:
    return f"{results_url(origin, course_id, line_item_id)}/{result_id}"
