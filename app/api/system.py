"""Liveness, readiness, and the tool's public keys."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.api.deps import Context
from app.api.problems import ProblemError, problem_responses
from app.context import AppContext
from app.store.migrate import head_revision

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Database unreachable or schema behind"}},
    summary="Readiness: database reachable and schema at head",
)
async def readyz(context: Context) -> JSONResponse:
    """The database check is shared: at most one a second, one in flight, so a burst of
    probes costs one query (and cannot exhaust the pool and fail itself)."""
    expected = head_revision()
    try:
        revision = await context.schema_at.get()
    except Exception as exc:
        body = Readiness(
            status="unavailable",
            database=f"unreachable: {type(exc).__name__}",
            schema_revision=None,
            expected_revision=expected,
        )
        return JSONResponse(body.model_dump(), status_code=503)
    ready = revision == expected
    body = Readiness(
        status="ok" if ready else "schema_behind",
        database="ok",
        schema_revision=revision,
        expected_revision=expected,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/.well-known/jwks.json",
    response_model=Jwks,
    summary="The tool's public keys (current and previous)",
)
async def jwks(context: Context) -> JSONResponse:
    return JSONResponse(context.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


@router.get(
    "/metrics",
    response_class=Response,
    responses=problem_responses(401),
    summary="Prometheus metrics",
    description="Events by decision, jobs by status, delivery latency, platform answers by "
    "class, token requests, throttling, HTTP requests by route and status, queue depth and the "
    "age of the oldest pending job (queue figures are at most a few seconds old). With "
    "`PASSBACK_METRICS_TOKEN` set, send `Authorization: Bearer <token>`.",
)
async def metrics_endpoint(
    context: Context,
    authorization: Annotated[
        str | None,
        Header(description="`Bearer <PASSBACK_METRICS_TOKEN>` when that setting is set."),
    ] = None,
) -> Response:
    token = context.settings.metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise ProblemError(401, "unauthorized", "/metrics wants the metrics token")
    return await metrics(context)


async def metrics(context: AppContext) -> Response:
    """The exposition of this instance's registry, queue gauges refreshed from the cached
    figures (also served by `passback worker --metrics-port`)."""
    metrics = context.metrics
    figures = await context.queue_figures.get()
    for status, count in figures.jobs_by_status.items():
        metrics.jobs_by_status.labels(status=status).set(count)
    oldest = figures.oldest_pending_created_at
    age = 0.0 if oldest is None else max(0.0, (context.clock() - oldest).total_seconds())
    metrics.oldest_pending_seconds.set(age)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
