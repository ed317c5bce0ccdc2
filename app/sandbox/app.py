"""`create_sandbox_app`: the Canvas-compatible platform as one ASGI application.

Layers, outermost first: the request log, the throttle, fault injection, then the routes
(token endpoint, AGS, platform JWKS, gradebook, admin). Canvas-shaped errors raised anywhere
under the routes are rendered by one handler.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from app.sandbox.admin import build_admin_router
from app.sandbox.ags import build_ags_router
from app.sandbox.config import SandboxConfig
from app.sandbox.errors import ApiError, NotFound, PlatformError, UnexpectedError, status_symbol
from app.sandbox.faults import ABORT_SCOPE_KEY, FaultMiddleware, transport_abort
from app.sandbox.gradebook import STATIC_PATH, build_gradebook_router, gradebook_assets
from app.sandbox.launch import build_platform_jwks_router
from app.sandbox.registration import build_registration_router
from app.sandbox.request_log import RequestLogMiddleware
from app.sandbox.state import SandboxState
from app.sandbox.throttle import ThrottleMiddleware
from app.sandbox.tokens import build_token_router

log = logging.getLogger("passback.sandbox")


class SandboxApp(FastAPI):
    """The sandbox's FastAPI app; `sandbox_state` is its world (seed it in-process)."""

    sandbox_state: SandboxState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only here, before any middleware wraps `send`, can the server's transport be
        # reached; fault injection uses it to reset connections.
        if scope["type"] == "http":
            abort = transport_abort(send)
            if abort is not None:
                scope[ABORT_SCOPE_KEY] = abort
        await super().__call__(scope, receive, send)


async def _platform_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PlatformError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/api/"):
        if exc.status_code == 404:
            return NotFound().response()
        return ApiError(
            "An error occurred.", exc.status_code, status_symbol(exc.status_code)
        ).response()
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("sandbox error on %s %s", request.method, request.url.path, exc_info=exc)
    return UnexpectedError(500).response()


def create_sandbox_app(
    config: SandboxConfig | None = None, *, state: SandboxState | None = None
) -> SandboxApp:
    """A new platform with its own state (or the given one, to seed before serving)."""
    state = state or SandboxState(config)
    app = SandboxApp(
        title="passback sandbox platform",
        description="A Canvas-compatible LTI 1.3 platform: token endpoint, AGS, launches.",
        version="1",
    )
    app.sandbox_state = state
    app.include_router(build_token_router(state))
    app.include_router(build_ags_router(state))
    app.include_router(build_platform_jwks_router(state))
    app.include_router(build_gradebook_router(state))
    app.include_router(build_admin_router(state))
    app.include_router(build_registration_router(state))
    app.mount(STATIC_PATH, gradebook_assets(), name="sandbox-static")
    app.add_exception_handler(PlatformError, _platform_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # Faults run inside the throttle: an injected delay holds its request's up-front
    # reservation, as a slow Canvas request does.
    app.add_middleware(FaultMiddleware, plan=state.faults)
    app.add_middleware(ThrottleMiddleware, throttle=state.throttle, cluster_of=state.cluster_of)
    app.add_middleware(RequestLogMiddleware, log=state.request_log, clock=state.clock)
    return app
