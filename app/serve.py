"""Running the service: the API with uvicorn, optionally beside the sandbox Canvas."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvicorn

from app.clock import utc_now
from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine
from app.demo import DEMO_TEACHER_ID
from app.development import mint_teacher_token, teacher_page_url
from app.intake.event_in import Organization
from app.intake.formatives import FormativePut, RosterClass, RosterStudent, put_formative
from app.main import create_app
from app.registry import PlatformCreate, RegistryError, register_platform
from app.sandbox import SandboxConfig, SandboxState, create_sandbox_app
from app.sandbox.seed import DemoSeed, seed_demo
from app.store import platforms as platform_store
from app.store.db import create_engine, create_session_factory

log = logging.getLogger("passback.serve")


KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this long."""
MAX_INCOMPLETE_EVENT_BYTES = 16 * 1024
"""Request line and headers larger than this are refused (h11; httptools has its own cap)."""
MAX_CONCURRENCY = 2048
"""Connections and requests at once beyond which uvicorn answers 503 instead of taking more
work (a safety valve: the reverse proxy in front should limit far earlier; see the README)."""


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    """uvicorn with the limits it has. It has no timeout for reading request headers: the
    reverse proxy in front enforces that; the body read timeout is our middleware's."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_INCOMPLETE_EVENT_BYTES,
        limit_concurrency=MAX_CONCURRENCY,
    )
    return uvicorn.Server(config)


async def register_sandbox_platform(settings: Settings, seed: DemoSeed) -> str:
    """Register (or re-activate) the sandbox as a platform; returns its id."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            existing = await platform_store.find_platform(session, seed.issuer, seed.client_id)
            if existing is not None:
                existing.active = True
                existing.deployment_ids = [seed.deployment_id]
                await session.commit()
                return existing.id
            body = PlatformCreate.model_validate(seed.platform_registration())
            platform = await register_platform(
                session, body, insecure_hosts=settings.insecure_hosts, now=utc_now()
            )
            return platform.id
    finally:
        await engine.dispose()


SANDBOX_FORMATIVE_ID = "sandbox-fractions-quiz"


async def save_sandbox_formative(settings: Settings, seed: DemoSeed) -> str:
    """A formative of the sandbox's demo course, taught by the demo teacher, as Formative
    would announce it (`PUT /v1/formatives/{id}`): its teacher page works from the start,
    its students not launched yet. Returns its id."""
    body = FormativePut(
        title="Fractions quiz (sandbox demo course)",
        teacher_ids=[DEMO_TEACHER_ID],
        organization=Organization(id="demo-org", license="school_district"),
        classes=[
            RosterClass(
                id="demo-class",
                name="Demo course",
                students=[RosterStudent(id=s.user_id, name=s.name) for s in seed.students],
            )
        ],
    )
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            await put_formative(session, SANDBOX_FORMATIVE_ID, body)
    finally:
        await engine.dispose()
    return SANDBOX_FORMATIVE_ID


def welcome_lines(
    base_url: str, dev_key: str | None, seed: DemoSeed | None, teacher_page: str | None = None
) -> list[str]:
    """What a newcomer reads once the service is up: where things are and what to try."""
    lines = [f"passback is up: API {base_url}  docs {base_url}/docs"]
    if dev_key is not None:
        lines.append(f"development API key (every scope): {dev_key}")
    if teacher_page is not None:
        lines.append(f"teacher page of a sandbox formative (nobody launched yet): {teacher_page}")
    if seed is not None:
        lines += [
            f"sandbox Canvas: {seed.base_url}  (issuer {seed.issuer}, client_id {seed.client_id})",
            f"pass three grades end to end: .venv/bin/passback demo --api {base_url}"
            f" --sandbox-url {seed.base_url}",
            "  (it prints the sandbox gradebook of the course it makes and the teacher page"
            " of its formative)",
        ]
    return lines


def _announce(lines: list[str], *, json_lines: bool) -> None:
    """Plain lines on stdout for a person; with JSON logs, log records like every other line
    (the development key itself stays out of the log stream)."""
    if not json_lines:
        print("\n".join(lines), flush=True)
        return
    for line in lines:
        if line.startswith("development API key"):
            line = "development API key (every scope) in var/dev-api-key"
        if "#token=" in line:  # a teacher token is a secret too
            line = line.split("#token=")[0] + " (token: passback teacher-token)"
        log.info(line)


async def run_service(
    settings: Settings, *, host: str, port: int, sandbox: bool, dev_key: str | None
) -> None:
    """Serve the API (and workers, per settings); with `sandbox`, the sandbox on port + 1."""
    base_url = f"http://{host}:{port}"
    servers = [_server(create_app(settings), host, port)]
    seed: DemoSeed | None = None
    teacher_page: str | None = None
    if sandbox:
        sandbox_url = f"http://{host}:{port + 1}"
        state = SandboxState(SandboxConfig(base_url=sandbox_url))
        seed = seed_demo(state, tool_jwks_url=f"{base_url}/.well-known/jwks.json")
        try:
            await register_sandbox_platform(settings, seed)
        except RegistryError as exc:
            raise SystemExit(
                f"cannot register the sandbox platform: {exc} "
                f"(is {host} in PASSBACK_INSECURE_HOSTS?)"
            ) from exc
        servers.append(_server(create_sandbox_app(state=state), host, port + 1))
        if settings.dev_mode and settings.teacher_token_secret is not None:
            formative_id = await save_sandbox_formative(settings, seed)
            token = mint_teacher_token(
                settings.teacher_token_secret.get_secret_value(),
                DEMO_TEACHER_ID,
                audience=settings.teacher_token_audience,
                formative_id=formative_id,
            )
            teacher_page = teacher_page_url(base_url, formative_id, token)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.05)
    else:
        _announce(
            welcome_lines(base_url, dev_key, seed, teacher_page), json_lines=settings.log_json
        )
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def run_workers_only(
    settings: Settings, *, metrics_host: str = "127.0.0.1", metrics_port: int | None = None
) -> None:
    """Deliver jobs until SIGINT/SIGTERM; then finish or release. With `metrics_port`, serve
    /metrics and /healthz there (app.worker_http), nothing else."""
    context = AppContext.build(settings)
    await context.load_tool_keys()
    context.follow_tool_keys()
    engine = DeliveryEngine(context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    stopping = asyncio.create_task(stop.wait())
    watched: list[asyncio.Task[Any]] = [stopping]
    server: uvicorn.Server | None = None
    if metrics_port is not None:
        from app.worker_http import create_worker_app

        # Listening first: a port in use ends the process before any job is claimed.
        server = _server(create_worker_app(context, engine), metrics_host, metrics_port)
        serving = asyncio.create_task(server.serve())  # it ends on SIGINT/SIGTERM too
        watched.append(serving)
        while not server.started:
            if serving.done():
                break
            await asyncio.sleep(0.02)
    await engine.start()
    log.info("delivery workers running as %s", engine.owner)
    try:
        assert engine.runner is not None
        await asyncio.wait([*watched, engine.runner], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await engine.stop()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*watched, return_exceptions=True)
        await context.close()
