"""The delivery engine meets a database outage while grades are in flight.

In-process (fast, and the engine's state can be inspected): an engine whose only way to
PostgreSQL is a TCP proxy, the sandbox Canvas answering slowly, and the line cut while
results are being written. After the line comes back every grade must still arrive, without
restarting anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.sandbox import SandboxConfig
from app.sandbox.config import ThrottleSettings
from app.store import claims
from app.store.migrate import upgrade_to_head_async
from app.store.models import JobStatus
from tests.conftest import make_settings
from tests.lti.world import World, build_context, make_world, quick_policy
from tests.reliability.figures import Figures
from tests.support import databases
from tests.support.sandbox import RunningSandbox, run_sandbox
from tests.support.tcp_proxy import CutMode, TcpProxy

STUDENTS = 60
RECOVERY_BOUND_SECONDS = 12.0
"""Leases are 4 s here: a job claimed by a transaction whose answer was lost is back by then."""


@pytest.fixture
async def sandbox_canvas() -> AsyncIterator[RunningSandbox]:
    async with run_sandbox(SandboxConfig(throttle=ThrottleSettings(enabled=False))) as sandbox:
        yield sandbox


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    server = make_url(databases.POSTGRES_SERVER_URL)
    async with TcpProxy(server.host or "127.0.0.1", server.port or 5432) as running:
        yield running


@pytest.fixture
async def context_via_proxy(
    postgres_url: str,
    proxy: TcpProxy,
    sandbox_canvas: RunningSandbox,
    tmp_path: Path,
    tool_keys_dir: Path,
) -> AsyncIterator[AppContext]:
    await upgrade_to_head_async(postgres_url)
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    settings = make_settings(
        url.render_as_string(hide_password=False), tmp_path, tool_keys_dir, http_read_timeout=2.0
    )
    context = build_context(settings, sandbox_canvas.clock)
    await context.load_tool_keys()
    try:
        yield context
    finally:
        await context.close()


async def statuses(world: World) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in await world.jobs():
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


async def delivered_count(world: World) -> int:
    return (await statuses(world)).get(JobStatus.delivered, 0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "seconds"),
    [
        # The server goes away: connections reset, new ones refused.
        pytest.param("reset", 2.0),
        # A partition shorter than the statement timeout (5 s): held bytes arrive late.
        pytest.param("blackhole", 3.0),
        # A partition longer than the statement timeout: asyncpg's TimeoutError.
        pytest.param("blackhole", 7.0),
    ],
)
async def test_grades_in_flight_when_the_database_goes_away_still_arrive(
    context_via_proxy: AppContext,
    sandbox_canvas: RunningSandbox,
    proxy: TcpProxy,
    mode: CutMode,
    seconds: float,
    figures: Figures,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="passback.delivery")
    await sandbox_canvas.admin.set_faults(latency_ms=300)
    world = await make_world(context_via_proxy, sandbox_canvas, students=STUDENTS)
    await world.enqueue_many(world.students)
    engine = DeliveryEngine(
        context_via_proxy, policy=quick_policy(concurrency=16, lease=timedelta(seconds=4))
    )
    await engine.start()
    try:
        while await delivered_count(world) < STUDENTS // 4:
            await asyncio.sleep(0.05)
        # Deliveries are in flight: their answers come back while the database is away.
        await proxy.cut(mode)
        await asyncio.sleep(seconds)
        await proxy.restore()
        restored = asyncio.get_running_loop().time()
        while await delivered_count(world) < STUDENTS:
            if asyncio.get_running_loop().time() - restored > RECOVERY_BOUND_SECONDS:
                break
            await asyncio.sleep(0.1)
        recovered_in = asyncio.get_running_loop().time() - restored
        # Read while the engine still runs: what a restart or a stop would flush does not count.
        while_running = await statuses(world)
    finally:
        await engine.stop()

    figures.record(f"{mode}_all_delivered_after_restore_s", round(recovered_in, 2))
    figures.record(f"{mode}_job_statuses_while_running", while_running)
    assert while_running == {JobStatus.delivered: STUDENTS}
    cells = [await world.cell(student) for student in world.students]
    assert {cell["score"] for cell in cells} == {"7"}
    assert max(cell["attempt"] for cell in cells) <= 1
    async with context_via_proxy.sessions() as session:
        assert await claims.next_pending_at(session) is None

    # The outage is told once, without a traceback, however many tries failed; then its end.
    engine_lines = [r for r in caplog.records if r.name == "passback.delivery"]
    outage = [r for r in engine_lines if r.getMessage().startswith("database unavailable")]
    back = [r for r in engine_lines if r.getMessage().startswith("database reachable again")]
    figures.record(f"{mode}_{seconds:g}s_outage_log", [r.getMessage()[:80] for r in outage + back])
    noticed = mode == "reset" or seconds > 5  # a shorter partition only delays statements
    assert (len(outage), len(back)) == ((1, 1) if noticed else (0, 0))
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in outage + back)
    assert not [r for r in engine_lines if r.levelno >= logging.ERROR]
