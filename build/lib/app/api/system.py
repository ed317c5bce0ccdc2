"""Liveness, readiness, and the tool's public keys."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.api.deps import Context
from app.store import stats
from app.store.db import schema_revision
from app.store.migrate import head_revision

router = APIRouter(tags=["system"])
READINESS_TIMEOUT_SECONDS = 3.0


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
    expected = head_revision()
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with context.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            revision = await schema_revision(context.engine)
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
    summary="Prometheus metrics",
    description="Events by decision, jobs by status, delivery latency, platform answers by "
    "class, token requests, throttling, queue depth and the age of the oldest pending job.",
)
async def metrics(context: Context) -> Response:
    metrics = context.metrics
    async with context.sessions() as session:
        counts = await stats.job_counts_by_status(session)
        oldest = await stats.oldest_pending_created_at(session)
    for status, count in counts.items():
        metrics.jobs_by_status.labels(status=status).set(count)
    age = 0.0 if oldest is None else max(0.0, (context.clock() - oldest).total_seconds())
    metrics.oldest_pending_seconds.set(age)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
