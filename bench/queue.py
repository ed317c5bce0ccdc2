"""The queue at scale, on PostgreSQL: claim cost as it grows, memory with 100,000 pending jobs,
and delivery rate over a long drain.

    .venv/bin/python -m bench.queue [--jobs 100000] [--drain-seconds 30] [--latency-ms 20]

1. claim cost: 64 due jobs leased (`claim_jobs`, rolled back) with 1k, 10k and 100k pending
   jobs in the table, median of 25 tries each, and the plan PostgreSQL picks at 100k. SPEC §6:
   claiming stays O(log n), i.e. an index walk, not a scan.
2. memory and linearity: a real `passback worker` process (default settings) drains the
   100k-job queue against the sandbox Canvas (its own process, `--latency-ms` per call,
   throttle off) for `--drain-seconds`. Its resident memory (VmRSS, sampled every 0.5 s) and
   the scores delivered in each 5-second window are printed. SPEC §6: RSS ≤ 200 MB with
   100,000 pending jobs; delivery time linear in jobs (a steady rate while the queue shrinks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from app.config import Settings
from app.context import AppContext
from app.lti.keys import write_new_key
from app.store.claims import claim_jobs
from app.store.db import transaction
from app.store.jobs import pair_key
from app.store.migrate import upgrade_to_head_async
from app.store.models import JobKind, JobStatus, PassbackJob, Platform
from bench.delivery import ROOT, Sandbox, count_by_status, seed_course
from tests.support import databases

CLAIM_BATCH = 64
CLAIM_TRIES = 25
INSERT_CHUNK = 5_000


def job_rows(
    platform: Platform, line_items: list[str], students: list[str], start: int, stop: int
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for number in range(start, stop):
        line_item = line_items[number // len(students) % len(line_items)]
        student = students[number % len(students)]
        rows.append(
            {
                "kind": JobKind.manual,
                "status": JobStatus.pending,
                "pair_key": pair_key(line_item, student),
                "platform_id": platform.id,
                "formative_id": "fm-bench",
                "student_id": f"s-{number % len(students)}",
                "class_id": "c-bench",
                "lineitem_url": line_item,
                "lti_user_id": student,
                "score": Decimal(number % 11),
                "max_score": Decimal(10),
                "score_timestamp": now,
                "submitted_at": now - timedelta(minutes=5),
                "response_url": f"https://formative.example/r/{number}",
                "new_submission": True,
                "attempt_count": 0,
                "next_attempt_at": now,
                "deadline_at": now + timedelta(hours=24),
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


async def fill_to(
    context: AppContext,
    platform: Platform,
    line_items: list[str],
    students: list[str],
    have: int,
    want: int,
) -> None:
    for start in range(have, want, INSERT_CHUNK):
        rows = job_rows(platform, line_items, students, start, min(want, start + INSERT_CHUNK))
        async with transaction(context.sessions) as session:
            await session.execute(insert(PassbackJob), rows)
    async with context.engine.begin() as connection:
        await connection.execute(text("ANALYZE passback_jobs"))


async def claim_milliseconds(context: AppContext, platform: Platform) -> float:
    timings = []
    for _ in range(CLAIM_TRIES):
        async with context.sessions() as session, session.begin():
            started = time.perf_counter()
            claimed = await claim_jobs(
                session,
                platform_id=platform.id,
                owner="bench",
                now=datetime.now(UTC),
                lease=timedelta(seconds=60),
                limit=CLAIM_BATCH,
            )
            timings.append((time.perf_counter() - started) * 1000)
            assert len(claimed.jobs) == CLAIM_BATCH, len(claimed.jobs)
            await session.rollback()
    return statistics.median(timings)


async def claim_plan(context: AppContext, platform: Platform) -> str:
    """The top of PostgreSQL's plan for the claim's candidate search."""
    async with context.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "EXPLAIN SELECT id FROM passback_jobs WHERE status = 'pending' "
                "AND platform_id = :platform AND next_attempt_at <= now() "
                "ORDER BY next_attempt_at LIMIT 64"
            ),
            {"platform": platform.id},
        )
        lines = [str(row[0]).strip() for row in rows]
    return " / ".join(line for line in lines if "Scan" in line or "Limit" in line)


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drain_with_worker(
    context: AppContext, platform: Platform, settings: Settings, seconds: float
) -> tuple[float, list[int]]:
    env = {
        **os.environ,
        "PASSBACK_DATABASE_URL": settings.database_url,
        "PASSBACK_VAR_DIR": str(settings.var_dir),
        "PASSBACK_DEV_MODE": "true",  # the tool keys' encryption key kept in var_dir
        "PASSBACK_INSECURE_HOSTS": "127.0.0.1",
        "PASSBACK_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "passback"), "worker"], cwd=ROOT, env=env
    )
    peak = 0.0
    windows: list[int] = []
    try:
        delivered_before = 0
        window_started = time.perf_counter()
        ended = window_started + seconds
        while time.perf_counter() < ended and worker.poll() is None:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_megabytes(worker.pid))
            if time.perf_counter() - window_started >= 5:
                delivered = (await count_by_status(context, platform))[JobStatus.delivered]
                windows.append(delivered - delivered_before)
                delivered_before = delivered
                window_started = time.perf_counter()
    finally:
        worker.terminate()
        worker.wait(30)
    return peak, windows


async def main(arguments: argparse.Namespace) -> None:
    database_url = await databases.create_postgres_database()
    await upgrade_to_head_async(database_url)
    sandbox = Sandbox()
    var_dir = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    write_new_key(var_dir / "keys")
    settings = Settings(
        database_url=database_url,
        var_dir=var_dir,
        insecure_hosts=["127.0.0.1"],
        log_json=False,
        dev_mode=True,
    )
    context = AppContext.build(settings)
    await context.load_tool_keys()
    try:
        await sandbox.wait_ready()
        await sandbox.call(
            "PATCH", "/throttle", {"enabled": False, "high_water": 1e9, "maximum": 2e9}
        )
        await sandbox.call("PUT", "/faults", {"latency_ms": arguments.latency_ms, "rules": []})
        platform, line_items, students, _ = await seed_course(
            sandbox, context, students=1000, assignments=max(1, arguments.jobs // 1000)
        )
        print(
            f"PostgreSQL; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
            f"claims of {CLAIM_BATCH} jobs, median of {CLAIM_TRIES}"
        )
        have = 0
        for size in (1_000, 10_000, arguments.jobs):
            await fill_to(context, platform, line_items, students, have, size)
            have = size
            milliseconds = await claim_milliseconds(context, platform)
            print(f"claim with {size:>7} pending: {milliseconds:6.2f} ms")
        print(f"plan at {have} pending: {await claim_plan(context, platform)}")

        peak, windows = await drain_with_worker(
            context, platform, settings, arguments.drain_seconds
        )
        left = (await count_by_status(context, platform))[JobStatus.pending]
        print(
            f"passback worker draining {have} jobs for {arguments.drain_seconds:.0f} s "
            f"(sandbox {arguments.latency_ms} ms per call): peak RSS {peak:.0f} MB "
            f"(target ≤ 200 MB); still pending {left}"
        )
        print("scores delivered per 5 s window: " + ", ".join(str(count) for count in windows))
    finally:
        await context.close()
        await sandbox.close()
        await databases.drop_postgres_database(database_url)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--latency-ms", type=int, default=20)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_arguments()))
    sys.exit(0)
