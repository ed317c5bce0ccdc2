"""Running the service: the API with uvicorn (optionally beside the sandbox platform)."""

from __future__ import annotations

import logging

import uvicorn

from app.config import Settings
from app.main import create_app

log = logging.getLogger("passback.serve")


def _server(app: object, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


async def run_service(
    settings: Settings, *, host: str, port: int, sandbox: bool, dev_key: str | None
) -> None:
    base_url = f"http://{host}:{port}"
    if dev_key is not None:
        print(f"development API key (every scope): {dev_key}", flush=True)
    print(f"docs: {base_url}/docs", flush=True)
    await _server(create_app(settings), host, port).serve()


async def run_workers_only(settings: Settings) -> None:
    raise SystemExit("the delivery engine is not wired yet")
