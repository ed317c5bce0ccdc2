"""The FastAPI application: wiring and lifespan only."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api import events, jobs, launches, lti, passback, platforms, system, teach
from app.api.middleware import BodyTooLargeError, RequestContextMiddleware
from app.api.openapi import install_openapi, operation_id
from app.api.problems import install_problem_handlers, problem_response
from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine
from app.metrics import package_version

DESCRIPTION = """\
Passes Formative scores back to Canvas (and any LTI 1.3 Advantage platform) through the
Assignment and Grade Services, automatically when a fully auto-graded formative is submitted
and on a teacher's command otherwise. Every error is `application/problem+json` with a stable
`code`. Authenticate with `Authorization: Bearer <API key or teacher token>`.
"""


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """Build the app. Pass `context` to share one already built (tests, the CLI)."""
    settings = settings or (context.settings if context else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = context is None
        app.state.context = context or AppContext.build(settings)
        if owned:
            await app.state.context.load_tool_keys()
            app.state.context.follow_tool_keys()
        workers = DeliveryEngine(app.state.context) if settings.run_workers else None
        if workers is not None:
            await workers.start()
        gc.freeze()  # what startup built lives as long as the process: out of the collector's way
        try:
            yield
        finally:
            if workers is not None:
                await workers.stop()
            if owned:
                await app.state.context.close()

    app = FastAPI(
        title="passback",
        version=package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_openapi from local assets
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    if context is not None:
        app.state.context = context
    install_problem_handlers(app)
    install_openapi(app)
    app.add_exception_handler(BodyTooLargeError, _on_body_too_large)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_read_timeout_seconds,
        direct_routes={("POST", "/v1/submission-events"): events.submit_event},
        exception_handlers=app.exception_handlers,
    )
    for module in (system, platforms, launches, events, passback, jobs, teach, lti):
        app.include_router(module.router)
    app.mount(teach.STATIC_PATH, teach.web_assets(), name="teach-static")
    return app


async def _on_body_too_large(request: Request, _exc: Exception) -> JSONResponse:
    return problem_response(413, "payload_too_large", "the request body is too large")
