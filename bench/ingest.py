"""Event intake on PostgreSQL: events/s and latency, beside a bare FastAPI endpoint.

    .venv/bin/python -m bench.ingest [--events 20000] [--concurrency 32] [--rate 300]

Makes a throw-away PostgreSQL database (`PASSBACK_TEST_POSTGRES_URL`, default the local
server), seeds a platform and launches, and starts two uvicorn processes the same way: the
service (one instance, workers off: intake only) and a bare FastAPI app whose one endpoint
parses the JSON body and answers 202. The same load generator (keep-alive HTTP/1.1 over
asyncio streams on uvloop, the bodies encoded beforehand) then drives each:

1. saturation: `--events` events, `--concurrency` in flight, for events/s and p50/p99; the
   two sides take turns (`--rounds` slices each), so that both meet the same machine;
2. paced: `--rate` events/s for `--paced-seconds` (open loop), for p50/p99 at that rate;
3. the service again on `--split` ineligible events, then on `--split` eligible ones (each
   queues a job), to show what each path costs.

Each line also gives the CPU time the server process spent per request (from /proc), which
stays meaningful when other work shares the machine and the rates do not.

The event mix is what a class produces: per student `started`, `submitted` (the first one of
a launched student is queued for automatic passback) and an `updated`; many students share
each formative. SPEC §6 targets: ≥ 1,000 events/s, p99 ≤ 50 ms at 300 events/s, and ≥ 40% of
the bare endpoint's rate. The figures depend on the machine; the load generator shares it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvloop
from fastapi import FastAPI
from sqlalchemy import func, select, text

from app.clock import utc_now
from app.store.db import create_engine, create_session_factory
from app.store.migrate import upgrade_to_head_async
from app.store.models import PassbackJob
from tests.support import databases
from tests.support.launches import ensure_platform, launch_from_assignment

EVENTS_KEY = "bench-events-key-0123456789"
ROOT = Path(__file__).resolve().parents[1]
KEEP_ALIVE_SECONDS = 4.0
"""An idle connection is not reused after this long: uvicorn closes them after 5 s."""

# ------------------------------------------------------------------------------------------
# The bare endpoint: FastAPI parsing a JSON body and answering, nothing else.

bare_app = FastAPI()


@bare_app.post("/v1/submission-events", status_code=202)
async def bare_endpoint(event: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event.get("event_id"), "decision": "not_eligible", "reasons": []}


# ------------------------------------------------------------------------------------------
# The world and the events.


@dataclass(frozen=True)
class World:
    formatives: int
    students_per_formative: int
    launched_share: float = 0.9
    name: str = "fm"

    def students(self) -> Iterator[tuple[str, str, bool]]:
        """Students of all formatives interleaved, as a school's classes submit side by side."""
        launched_per_formative = int(self.students_per_formative * self.launched_share)
        for s in range(self.students_per_formative):
            for f in range(self.formatives):
                yield f"{self.name}-{f}", f"s-{f}-{s}", s < launched_per_formative


def _event(
    kind: str, formative_id: str, student_id: str, n: int, occurred: datetime
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "type": kind,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "organization": {"id": "org-1", "license": "school_district"},
        "formative": {
            "id": formative_id,
            "title": f"Quiz {formative_id}",
            "auto_passback": True,
            "teacher_ids": ["t-1", "t-2"],
            "questions": [{"id": f"q{q}", "points": 2, "grading": "auto"} for q in range(5)],
        },
        "student": {"id": student_id, "class_id": "c-1", "name": f"Student {student_id}"},
        "attempt": 1,
        "score": 7.5,
        "max_score": 10,
        "response_url": f"https://formative.example/r/{formative_id}/{student_id}",
    }
    if kind != "started":
        body["submitted_by"] = "student"
        body["submitted_at"] = (occurred - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    if kind == "updated":
        body["cause"] = "teacher_adjusted"
        body["score"] = 8
    return body


BATCH = 200


def event_bodies(
    world: World,
    count: int,
    *,
    prefix: str,
    kinds: tuple[str, ...] = ("started", "submitted", "updated"),
    launched_only: bool = False,
) -> list[bytes]:
    """`count` encoded events: per student one event of each of `kinds`, in that order;
    students go in batches of `BATCH`, so every stretch of the run mixes the kinds."""
    start = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    students = [student for student in world.students() if student[2] or not launched_only]
    bodies: list[bytes] = []
    for first in range(0, len(students), BATCH):
        batch = students[first : first + BATCH]
        for kind in kinds:
            for formative_id, student_id, _launched in batch:
                if len(bodies) == count:
                    return bodies
                n = len(bodies)
                body = _event(kind, formative_id, student_id, n, start + timedelta(milliseconds=n))
                body["event_id"] = f"{prefix}-{n}"
                bodies.append(json.dumps(body).encode())
    return bodies


async def seed(database_url: str, *worlds: World) -> int:
    """A platform and the launches of the worlds' launched students; returns how many."""
    engine = create_engine(database_url, pool_size=2)
    sessions = create_session_factory(engine)
    now = utc_now()
    count = 0
    try:
        async with sessions() as session, session.begin():
            platform = await ensure_platform(session, now, "bench")
            students = [student for world in worlds for student in world.students()]
            for formative_id, student_id, launched in students:
                if not launched:
                    continue
                await launch_from_assignment(
                    session,
                    now,
                    platform_id=platform.id,
                    formative_id=formative_id,
                    student_id=student_id,
                    class_id="c-1",
                    lineitem_id=formative_id,
                )
                count += 1
    finally:
        await engine.dispose()
    return count


async def automatic_jobs(database_url: str) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(PassbackJob)) or 0)
    finally:
        await engine.dispose()


async def intake_batches(base_url: str) -> tuple[float, float]:
    """(events, batches) the service's intake has written so far, from its /metrics."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        text_format = (await client.get("/metrics")).text
    values = {"sum": 0.0, "count": 0.0}
    for line in text_format.splitlines():
        name, _, value = line.partition(" ")
        if name in ("passback_intake_batch_events_sum", "passback_intake_batch_events_count"):
            values[name.rsplit("_", 1)[1]] = float(value)
    return values["sum"], values["count"]


async def analyze(database_url: str) -> None:
    """Fresh planner statistics, as a server in service has (autovacuum would take a minute
    to notice tables that filled during the warm-up)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.commit()
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------
# Serving and measuring.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(
    target: str, port: int, env: dict[str, str], *, factory: bool
) -> subprocess.Popen[bytes]:
    """uvicorn in its own process, one worker, uvloop + httptools, no access log."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if factory:
        command.append("--factory")
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})


async def wait_until_up(base_url: str, path: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{base_url} exited with {process.returncode}")
            try:
                if (await client.get(path)).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base_url} did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of the local PostgreSQL server's processes so far, those that exited included
    (the postmaster counts its children's), 0 when it is not local: the database's share."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone, or not ours to read
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name.startswith("postgres"):
            fields = rest.split()
            ticks = sum(int(value) for value in fields[11:15])  # own and exited children's
            total += ticks / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


class Connection:
    """One keep-alive HTTP/1.1 connection posting pre-built requests.

    Raw asyncio streams rather than httpx: the load generator shares the machine with the
    servers, and httpx costs several times the bare endpoint's own CPU per request, so it
    would measure the generator. Both endpoints are driven by the same code."""

    def __init__(self, base_url: str) -> None:
        address = base_url.removeprefix("http://")
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    def request(self, body: bytes) -> bytes:
        head = (
            f"POST /v1/submission-events HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {EVENTS_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > KEEP_ALIVE_SECONDS:
            await self.close()  # the server may be closing it right now (as clients do)
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        answer = await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        return status, answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _connections(base_url: str, count: int) -> list[Connection]:
    return [Connection(base_url) for _ in range(count)]


async def _send(connection: Connection, body: bytes, run: Run, *, since: float) -> None:
    try:
        status, answer = await connection.post(connection.request(body))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        run.errors[type(exc).__name__] += 1
        await connection.close()
        return
    run.latencies.append(time.perf_counter() - since)
    run.statuses[status] += 1
    if status in (200, 202):
        run.decisions[json.loads(answer).get("decision", "?")] += 1


async def saturate(
    label: str, base_url: str, bodies: list[bytes], concurrency: int, *, into: Run | None = None
) -> Run:
    """Closed loop: `concurrency` senders, each sending its next event when answered. With
    `into`, the figures are added to that run's."""
    run = into or Run(label)
    pending = iter(bodies)
    connections = _connections(base_url, concurrency)

    async def sender(connection: Connection) -> None:
        for body in pending:
            await _send(connection, body, run, since=time.perf_counter())

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender(connection) for connection in connections))
        run.seconds += time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return run


async def paced(
    label: str, base_url: str, bodies: list[bytes], rate: float, *, connections: int = 64
) -> Run:
    """Open loop: event n is due at n/rate s whatever the answers. Latency counts from when
    it was due, so waiting for a free connection (at most `connections`) is included: a
    service that falls behind shows it in p99 instead of slowing the sender down."""
    run = Run(label)
    interval = 1.0 / rate
    idle = _connections(base_url, connections)
    opened = list(idle)
    free = asyncio.Condition()

    async def send_when_free(body: bytes, due: float) -> None:
        async with free:
            await free.wait_for(lambda: bool(idle))
            connection = idle.pop()
        try:
            await _send(connection, body, run, since=due)
        finally:
            async with free:
                idle.append(connection)
                free.notify()

    tasks = []
    try:
        started = time.perf_counter()
        for n, body in enumerate(bodies):
            due = started + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send_when_free(body, due)))
        await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in opened))
    return run


def report(run: Run) -> str:
    statuses = ", ".join(
        [f"{status}: {count}" for status, count in sorted(run.statuses.items())]
        + [f"{error}: {count}" for error, count in sorted(run.errors.items())]
    )
    count = len(run.latencies) or float("nan")
    cpu = run.server_cpu / count * 1000
    database_cpu = run.database_cpu / count * 1000
    return (
        f"{run.label:<32} {len(run.latencies):>6} req {run.rate:>6.0f} /s  "
        f"p50 {run.percentile(0.50):>6.1f} ms  p99 {run.percentile(0.99):>6.1f} ms  "
        f"CPU/req server {cpu:.2f} ms, PostgreSQL {database_cpu:.2f} ms  [{statuses}]"
    )


async def measured(process: subprocess.Popen[bytes], run: Coroutine[Any, Any, Run]) -> Run:
    """Run a load and add the CPU time the server process spent on it to the run's."""
    before, database_before = cpu_seconds(process.pid), postgres_cpu_seconds()
    result = await run
    result.server_cpu += cpu_seconds(process.pid) - before
    result.database_cpu += postgres_cpu_seconds() - database_before
    return result


@dataclass
class Side:
    """One side of the comparison: its server process, its address and its run so far."""

    process: subprocess.Popen[bytes]
    base_url: str
    run: Run
    round_rates: list[float] = field(default_factory=list)


async def side_by_side(
    sides: list[Side], bodies: list[bytes], concurrency: int, rounds: int
) -> None:
    """Saturation runs of each side in turns, `rounds` slices of `bodies` each: the machine
    is shared (with other machines too), and its speed drifts within a run; taking turns
    puts both sides through the same drift, so their ratio stays put when the rates move."""
    size = -(-len(bodies) // rounds)
    for first in range(0, len(bodies), size):
        part = bodies[first : first + size]
        for side in sides:
            before = (len(side.run.latencies), side.run.seconds)
            load = saturate(side.run.label, side.base_url, part, concurrency, into=side.run)
            await measured(side.process, load)
            count, seconds = len(side.run.latencies) - before[0], side.run.seconds - before[1]
            side.round_rates.append(count / seconds if seconds else 0.0)


async def main(arguments: argparse.Namespace) -> None:
    world = World(formatives=arguments.formatives, students_per_formative=arguments.students)
    split_world = World(formatives=20, students_per_formative=120, name="split")
    database_url = await databases.create_postgres_database()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await upgrade_to_head_async(database_url)
        launches = await seed(database_url, world, split_world)
        var_dir = tempfile.mkdtemp(prefix="passback-bench-")
        service_env = {
            "PASSBACK_DATABASE_URL": database_url,
            "PASSBACK_API_KEYS": json.dumps(
                [{"name": "bench", "key": EVENTS_KEY, "scopes": ["events"]}]
            ),
            "PASSBACK_RUN_WORKERS": "false",
            "PASSBACK_VAR_DIR": var_dir,
            "PASSBACK_DEV_MODE": "true",  # its tool keys sealed with a key kept in var_dir
            "PASSBACK_LOG_LEVEL": "WARNING",
            "PASSBACK_DATABASE_POOL_SIZE": str(arguments.pool),
        }
        service_port, bare_port = free_port(), free_port()
        service = start_server("app.main:create_app", service_port, service_env, factory=True)
        processes.append(service)
        bare = start_server("bench.ingest:bare_app", bare_port, {}, factory=False)
        processes.append(bare)
        service_url = f"http://127.0.0.1:{service_port}"
        bare_url = f"http://127.0.0.1:{bare_port}"
        await wait_until_up(service_url, "/healthz", service)
        await wait_until_up(bare_url, "/docs", bare)

        total = arguments.events + arguments.warmup + int(arguments.rate * arguments.paced_seconds)
        bodies = event_bodies(world, total, prefix="evt")
        warmup = bodies[: arguments.warmup]
        load = bodies[arguments.warmup : arguments.warmup + arguments.events]
        paced_load = bodies[arguments.warmup + arguments.events :]

        print(
            f"PostgreSQL intake, one uvicorn process each; {len(load)} events, "
            f"concurrency {arguments.concurrency}; {world.formatives} formatives × "
            f"{world.students_per_formative} students; {launches} launches; "
            f"database pool {arguments.pool}",
            flush=True,
        )
        await saturate("warm-up", bare_url, warmup, arguments.concurrency)
        service_runs = [await saturate("warm-up", service_url, warmup, arguments.concurrency)]
        await analyze(database_url)
        bare_side = Side(bare, bare_url, Run("bare FastAPI endpoint"))
        service_side = Side(service, service_url, Run("passback /v1/submission-events"))
        events_before, batches_before = await intake_batches(service_url)
        await side_by_side([bare_side, service_side], load, arguments.concurrency, arguments.rounds)
        events_after, batches_after = await intake_batches(service_url)
        bare_run, service_run = bare_side.run, service_side.run
        print(report(bare_run), flush=True)
        print(report(service_run), flush=True)
        service_runs.append(service_run)
        paced_run = await measured(
            service,
            paced(
                f"passback at {arguments.rate:.0f} events/s",
                service_url,
                paced_load,
                arguments.rate,
            ),
        )
        print(report(paced_run), flush=True)
        service_runs.append(paced_run)

        for label, kinds in (
            ("passback, ineligible events only", ("started",)),
            ("passback, eligible events only", ("submitted",)),
        ):
            split = event_bodies(
                split_world, arguments.split, prefix=kinds[0], kinds=kinds, launched_only=True
            )
            split_run = await measured(
                service, saturate(label, service_url, split, arguments.concurrency)
            )
            print(report(split_run), flush=True)
            service_runs.append(split_run)

        share = service_run.rate / bare_run.rate if bare_run.rate else 0.0
        shares = [
            service_rate / bare_rate
            for bare_rate, service_rate in zip(
                bare_side.round_rates, service_side.round_rates, strict=True
            )
            if bare_rate
        ]
        queued = sum(run.decisions["queued"] for run in service_runs)
        jobs = await automatic_jobs(database_url)
        print(f"decisions in the saturation run: {dict(service_run.decisions)}")
        batch_size = (events_after - events_before) / max(batches_after - batches_before, 1)
        print(f"events per database batch in the saturation run: {batch_size:.1f}")
        print(f"answers 'queued' in all runs: {queued}; jobs in the database: {jobs}")
        print(
            f"service/bare by turn ({len(shares)} turns of {len(load) // len(shares)} events "
            f"each): {', '.join(f'{one:.0%}' for one in shares)}"
        )
        print(
            f"service/bare: {share:.0%} (target ≥ 40%); events/s: {service_run.rate:.0f} "
            f"(target ≥ 1,000); p99 at {arguments.rate:.0f}/s: "
            f"{paced_run.percentile(0.99):.1f} ms (target ≤ 50 ms)"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        await databases.drop_postgres_database(database_url)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=8, help="turns the two sides take in the saturation run"
    )
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--split", type=int, default=2000, help="events of each kind measured apart after"
    )
    parser.add_argument("--formatives", type=int, default=100)
    parser.add_argument("--students", type=int, default=80, help="students per formative")
    parser.add_argument(
        "--pool", type=int, default=32, help="database pool size (PASSBACK_DATABASE_POOL_SIZE)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_arguments()))
