"""The HTTP face of `passback worker --metrics-port P`: `/metrics` and `/healthz`, nothing else.

`/metrics` is the API's own endpoint (app.api.system), so a worker-only instance exports the
same series (platform answers, throttling, finished jobs, token requests, queue depth); when
the database is away it still answers, with the gauges read from it left as they were.
`/healthz` is liveness: 200 while the delivery engine runs (also during a database outage,
which a restart would not cure; the body says so), 503 once it has stopped.

    app = create_worker_app(context, engine)   # served by uvicorn in app.serve
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api import system
from app.api.deps import Context
from app.context import AppContext
from app.delivery import DeliveryEngine
from app.delivery.health import describe

log = logging.getLogger("passback.worker")


def create_worker_app(context: AppContext, engine: DeliveryEngine) -> FastAPI:
    app = FastAPI(title="passback worker", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.context = context

    @app.get("/metrics", response_class=Response)
    async def metrics(context: Context) -> Response:
        try:
            return await system.metrics(context)
        except Exception as exc:
            log.debug("metrics without the queue gauges (%s)", describe(exc))
            return Response(
                generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST
            )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        runner = engine.runner
        running = runner is not None and not runner.done()
        body = {
            "status": "ok" if running else "stopped",
            "engine": engine.owner,
            "database": "unavailable" if engine.health.down else "ok",
            "in_flight": engine.in_flight,
        }
        return JSONResponse(body, status_code=200 if running else 503)

    return app
