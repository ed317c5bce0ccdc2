"""Delivery throughput against the sandbox Canvas, on PostgreSQL.

    .venv/bin/python -m bench.delivery [--students 100] [--assignments 30] [--sequential 50]
                                       [--throttled-assignments 30] [--latency-ms 100]

Makes a throw-away PostgreSQL database (`PASSBACK_TEST_POSTGRES_URL`, default the local
server) and runs the sandbox Canvas in its own process, with `--latency-ms` added to every
token and AGS call. One engine (one instance, default settings: `worker_concurrency` 64)
delivers queued jobs: every student of a course × every assignment, as a teacher's classes
produce them.

1. open: the sandbox's throttle off; scores/s from the first claim to the last write.
2. sequential: the pylti1p3 way, one score POST at a time, each waiting for its answer (with a
   token fetched once, which is generous to it); scores/s; and the ratio to (1).
3. throttled: Canvas's leaky bucket with Canvas's numbers (high-water 600, 50 reserved per
   request in flight, leak 10/s; the sandbox charges 0.1 per request), so the bucket sustains
   leak ÷ cost = 100 calls/s. Reports accepted AGS calls/s as a share of that, scores/s, and
   the share of calls Canvas throttled (403).

Each run prints the service's CPU per delivered score (the process's CPU time over the run,
the benchmark's own polling included).

SPEC §6 targets: ≥ 200 scores/s per instance; ≥ 20× the sequential loop; under the throttle
≥ 95% of the sustainable rate with < 1% of calls throttled; ≤ 2 ms of service CPU per
delivered score. The figures depend on the machine
(the sandbox and the database share it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import func, select

from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine
from app.lti.ags_documents import Score
from app.lti.keys import write_new_key
from app.lti.tokens import DELIVERY_SCOPES
from app.store.db import transaction
from app.store.jobs import NewJob, enqueue_job
from app.store.migrate import upgrade_to_head_async
from app.store.models import JobKind, JobStatus, PassbackJob, Platform
from tests.lti.world import register_scenario
from tests.support import databases

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sandbox:
    """The sandbox Canvas in its own process, driven through its admin API; it plays one
    Canvas host per entry of `clusters` (its database cluster), each on its own port."""

    def __init__(self, clusters: tuple[str, ...] = ("cluster1",)) -> None:
        ports = [free_port() for _ in clusters]
        self.port = ports[0]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.hosts = [f"http://127.0.0.1:{port}" for port in ports]
        command = [sys.executable, "-m", "app.sandbox", "--port", str(self.port)]
        command += ["--cluster", clusters[0], "--request-log-limit", "200000"]
        for port, cluster in zip(ports[1:], clusters[1:], strict=True):
            command += ["--also", f"{port}={cluster}"]
        self.process = subprocess.Popen(command, cwd=ROOT)
        self.admin = httpx.AsyncClient(base_url=f"{self.base_url}/sandbox/admin", timeout=120)

    async def wait_ready(self) -> None:
        for _ in range(200):
            try:
                if (await self.admin.get("/platform")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("the sandbox did not start")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.admin.request(method, path, json=body)
        response.raise_for_status()
        return None if response.status_code == 204 else response.json()

    def cpu_seconds(self) -> float:
        """CPU time the sandbox process has used (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def close(self) -> None:
        await self.admin.aclose()
        self.process.terminate()
        self.process.wait(10)


@asynccontextmanager
async def bench_service(
    start_sandbox: Callable[[], Sandbox], var_prefix: str
) -> AsyncIterator[tuple[Sandbox, AppContext]]:
    """The service's context on a migrated PostgreSQL database (PASSBACK_BENCH_DATABASE_URL,
    else a new one, dropped after), with a new tool key in a temporary var dir named
    `var_prefix`..., beside the sandbox `start_sandbox` starts (ready); all closed after."""
    database_url = os.environ.get("PASSBACK_BENCH_DATABASE_URL")
    own_database = database_url is None
    if database_url is None:
        database_url = await databases.create_postgres_database()
    await upgrade_to_head_async(database_url)
    sandbox = start_sandbox()
    var_dir = Path(tempfile.mkdtemp(prefix=var_prefix))
    write_new_key(var_dir / "keys")
    settings = Settings(
        database_url=database_url,
        var_dir=var_dir,
        insecure_hosts=["127.0.0.1"],
        database_pool_size=20,
        log_json=False,
        key_encryption_key=base64.b64encode(os.urandom(32)).decode(),
    )
    context = AppContext.build(settings)
    await context.load_tool_keys()
    try:
        await sandbox.wait_ready()
        yield sandbox, context
    finally:
        await context.close()
        await sandbox.close()
        if own_database:
            await databases.drop_postgres_database(database_url)


def on_host(url: str, host: str) -> str:
    """`url` addressed to another of the sandbox's Canvas hosts (``http://127.0.0.1:PORT``)."""
    return urlunsplit(urlsplit(url)._replace(netloc=urlsplit(host).netloc))


async def seed_course(
    sandbox: Sandbox,
    context: AppContext,
    *,
    students: int,
    assignments: int,
    hosts: Sequence[str] = (),
) -> tuple[Platform, list[str], list[str], str]:
    """A developer key, a course with `students` and `assignments`, and its registration;
    the line items are spread over `hosts` in turn (default: the first host only)."""
    world = await sandbox.call(
        "POST",
        "/scenario",
        {"tool_jwk": context.keyring.current.public_jwk(), "points": "10", "students": students},
    )
    line_items = [world["assignment"]["line_item_url"]]
    for number in range(assignments - 1):
        created = await sandbox.call(
            "POST",
            f"/courses/{world['course_id']}/assignments",
            {"name": f"Quiz {number}", "points": "20", "client_id": world["client_id"]},
        )
        line_items.append(created["line_item_url"])
    if hosts:
        line_items = [on_host(url, hosts[n % len(hosts)]) for n, url in enumerate(line_items)]
    platform = await register_scenario(
        context, world, sandbox.base_url, label="bench", also=sandbox.hosts
    )
    students_lti = [student["lti_id"] for student in world["students"]]
    return platform, line_items, students_lti, world["client_id"]


async def enqueue_all(
    context: AppContext, platform: Platform, line_items: list[str], students: list[str]
) -> int:
    now = datetime.now(UTC)
    count = 0
    for line_item in line_items:
        async with transaction(context.sessions) as session:
            for index, student in enumerate(students):
                new = NewJob(
                    kind=JobKind.manual,
                    platform_id=platform.id,
                    formative_id="fm-bench",
                    student_id=f"s-{index}",
                    class_id="c-bench",
                    lineitem_url=line_item,
                    lti_user_id=student,
                    score_timestamp=now,
                    score=Decimal(index % 11),
                    max_score=Decimal(10),
                    submitted_at=now - timedelta(minutes=5),
                    response_url=f"https://formative.example/r/{index}",
                )
                await enqueue_job(session, new, now=now, deadline=timedelta(hours=24))
                count += 1
    return count


async def count_by_status(context: AppContext, platform: Platform) -> Counter[str]:
    async with context.sessions() as session:
        rows = await session.execute(
            select(PassbackJob.status, func.count())
            .where(PassbackJob.platform_id == platform.id)
            .group_by(PassbackJob.status)
        )
        return Counter({str(status): int(count) for status, count in rows})


async def deliver_all(context: AppContext, platform: Platform) -> tuple[float, DeliveryEngine]:
    """Run one engine until the platform's jobs are all finished; returns the seconds taken."""
    engine = DeliveryEngine(context)
    started = time.perf_counter()
    await engine.start()
    try:
        while True:
            counts = await count_by_status(context, platform)
            if counts[JobStatus.pending] == 0 and counts[JobStatus.in_flight] == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        elapsed = time.perf_counter() - started
        await engine.stop()
    return elapsed, engine


async def sequential_loop(
    context: AppContext, platform: Platform, line_item: str, students: list[str]
) -> float:
    """pylti1p3's put_grade loop: one POST, wait, the next."""
    await context.tokens.get(platform, DELIVERY_SCOPES)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for index, student in enumerate(students):
        score = Score(
            user_id=student,
            score_given=Decimal(index % 11),
            score_maximum=Decimal(10),
            activity_progress="Completed",
            timestamp=now,
            submitted_at=now - timedelta(minutes=5),
            response_url=f"https://formative.example/r/{index}",
        )
        exchanges = await context.ags.post_score(platform, line_item, score)
        assert exchanges[-1].outcome.code == "delivered", exchanges[-1].outcome
    return time.perf_counter() - started


async def main(arguments: argparse.Namespace) -> None:
    async with bench_service(Sandbox, "bench-delivery-") as (sandbox, context):
        latency = {"latency_ms": arguments.latency_ms, "rules": []}
        print(
            f"PostgreSQL, one instance (worker_concurrency {context.settings.worker_concurrency}), "
            f"sandbox at {arguments.latency_ms} ms per AGS call; machine load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )

        # 1. open
        # No throttling: a bucket too big to matter (the sandbox reports its remaining room
        # even when it enforces nothing, and the engine listens to that).
        await sandbox.call(
            "PATCH", "/throttle", {"enabled": False, "high_water": 1e9, "maximum": 2e9}
        )
        await sandbox.call("PUT", "/faults", latency)
        platform, line_items, students, client_id = await seed_course(
            sandbox, context, students=arguments.students, assignments=arguments.assignments
        )
        jobs = await enqueue_all(context, platform, line_items, students)
        cpu_before = (time.process_time(), sandbox.cpu_seconds())
        seconds, engine = await deliver_all(context, platform)
        cpu_used = (
            time.process_time() - cpu_before[0],
            sandbox.cpu_seconds() - cpu_before[1],
        )
        counts = await count_by_status(context, platform)
        open_rate = counts[JobStatus.delivered] / seconds
        print(
            f"open:       {counts[JobStatus.delivered]}/{jobs} delivered in {seconds:.2f} s = "
            f"{open_rate:.0f} scores/s; token requests {await token_grants(sandbox, client_id)}; "
            f"claim queries {engine.stats.claim_queries}, write batches "
            f"{engine.stats.write_batches}; CPU s: service {cpu_used[0]:.1f}, "
            f"sandbox {cpu_used[1]:.1f}; service CPU per score "
            f"{1000 * cpu_used[0] / max(1, counts[JobStatus.delivered]):.2f} ms"
        )

        # 2. sequential, same run, same latency
        seq_platform, seq_items, seq_students, _ = await seed_course(
            sandbox, context, students=arguments.sequential, assignments=1
        )
        seq_seconds = await sequential_loop(context, seq_platform, seq_items[0], seq_students)
        seq_rate = len(seq_students) / seq_seconds
        print(
            f"sequential: {len(seq_students)} scores one POST at a time in {seq_seconds:.2f} s = "
            f"{seq_rate:.1f} scores/s; engine/sequential = {open_rate / seq_rate:.1f}x"
        )

        # 3. throttled: Canvas's bucket
        await sandbox.call(
            "PATCH", "/throttle", {"enabled": True, "high_water": 600.0, "maximum": 800.0}
        )
        throttle = (await sandbox.call("GET", "/throttle"))["settings"]
        sustainable = throttle["leak_per_second"] / throttle["request_cost"]
        thr_platform, thr_items, thr_students, _ = await seed_course(
            sandbox,
            context,
            students=arguments.students,
            assignments=arguments.throttled_assignments,
        )
        thr_jobs = await enqueue_all(context, thr_platform, thr_items, thr_students)
        await sandbox.call("DELETE", "/requests")
        thr_cpu = time.process_time()
        thr_seconds, thr_engine = await deliver_all(context, thr_platform)
        thr_cpu = time.process_time() - thr_cpu
        thr_counts = await count_by_status(context, thr_platform)
        calls = await sandbox.call("GET", "/requests")
        ags_calls = [call for call in calls if call["path"].startswith("/api/lti/")]
        throttled = sum(1 for call in ags_calls if call["status"] == 403)
        accepted = len(ags_calls) - throttled
        call_rate = accepted / thr_seconds
        lane = thr_engine.lane(thr_platform.id)
        print(
            f"throttled:  {thr_counts[JobStatus.delivered]}/{thr_jobs} delivered in "
            f"{thr_seconds:.2f} s = {thr_counts[JobStatus.delivered] / thr_seconds:.0f} scores/s; "
            f"{accepted} accepted AGS calls = {call_rate:.1f} calls/s = "
            f"{100 * call_rate / sustainable:.0f}% of the bucket's sustainable "
            f"{sustainable:.0f} calls/s; throttled {throttled}/{len(ags_calls)} = "
            f"{100 * throttled / max(1, len(ags_calls)):.2f}% of calls; final lane limit "
            f"{lane.group.limit if lane else 0:.1f}, "
            f"round trip {1000 * (lane.latency if lane else 0):.0f} ms; service CPU per score "
            f"{1000 * thr_cpu / max(1, thr_counts[JobStatus.delivered]):.2f} ms"
        )
        print(
            json.dumps(
                {
                    "open_scores_per_s": round(open_rate, 1),
                    "open_cpu_ms_per_score": round(
                        1000 * cpu_used[0] / max(1, counts[JobStatus.delivered]), 2
                    ),
                    "sequential_scores_per_s": round(seq_rate, 2),
                    "ratio": round(open_rate / seq_rate, 1),
                    "throttled_calls_per_s": round(call_rate, 1),
                    "throttled_share_of_sustainable": round(call_rate / sustainable, 3),
                    "throttled_call_share": round(throttled / max(1, len(ags_calls)), 4),
                }
            )
        )


async def token_grants(sandbox: Sandbox, client_id: str) -> int:
    grants = await sandbox.call("GET", f"/developer-keys/{client_id}/token-grants")
    return int(grants["count"])


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--assignments", type=int, default=30)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--throttled-assignments", type=int, default=30)
    parser.add_argument("--latency-ms", type=int, default=100)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_arguments()))
