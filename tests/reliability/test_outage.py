"""PostgreSQL becomes unreachable while Formative keeps reporting events.

What the API promises through an outage: answers come quickly (503 problem+json, never a
hang or a 500), it recovers on its own when the database returns, and everything it
acknowledged (2xx) is stored. The instance runs without workers so the API is measured alone;
the workers' side of an outage is tests/reliability/test_engine_outage.py.

The service runs as a process whose only way to PostgreSQL is a TCP proxy; cutting the proxy
is an outage for this service alone (the shared server keeps running for everyone else).
Two kinds: `reset` (the server went away: connections reset, new ones refused) and
`blackhole` (a partition: packets vanish, nothing answers).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.sandbox import SandboxConfig
from app.sandbox.config import ThrottleSettings
from tests.reliability.database import event_decisions, jobs_by_status
from tests.reliability.figures import Figures
from tests.reliability.remote import (
    EVENTS,
    Learner,
    RemoteClass,
    launch_all,
    post_until_answered,
    seed_class,
)
from tests.support import databases
from tests.support.processes import service_env, start_service
from tests.support.sandbox import run_sandbox
from tests.support.tcp_proxy import CutMode, TcpProxy

STUDENTS = 400
RESET_STUDENTS = 250
SENDERS = 4
PACE_SECONDS = 0.1
BEFORE_SECONDS = 0.5
OUTAGE_SECONDS = {"reset": 2.0, "blackhole": 7.0}
AFTER_SECONDS = 1.0
ANSWER_BOUND_SECONDS = 10.0
"""A request during the outage is answered within this (the client must not hang)."""
RECOVERY_BOUND_SECONDS = 15.0


@dataclass
class Answer:
    body: dict[str, Any]
    learner: Learner
    sent_at: float
    seconds: float
    status: int | None
    """None: no HTTP answer at all (connection error or client timeout)."""
    content_type: str = ""
    code: str | None = None

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])


@dataclass
class Outage:
    mode: CutMode
    cut_at: float = 0.0
    restored_at: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    readiness_during: list[int] = field(default_factory=list)

    def during(self) -> list[Answer]:
        return [a for a in self.answers if self.cut_at <= a.sent_at < self.restored_at]

    def recovery_seconds(self) -> float | None:
        """From the line coming back to the first event acknowledged that was sent after."""
        after = [
            a.sent_at + a.seconds - self.restored_at
            for a in self.answers
            if a.sent_at >= self.restored_at and a.status is not None and a.status < 300
        ]
        return min(after) if after else None


async def send_events_through(
    api: httpx.AsyncClient,
    proxy: TcpProxy,
    room: RemoteClass,
    learners: list[Learner],
    mode: CutMode,
) -> Outage:
    """Keep sending one event per learner while the database goes away and comes back."""
    outage = Outage(mode)
    queue: asyncio.Queue[Learner] = asyncio.Queue()
    for learner in learners:
        queue.put_nowait(learner)
    stop = asyncio.Event()

    async def sender() -> None:
        while not stop.is_set() and not queue.empty():
            learner = queue.get_nowait()
            body = room.submitted_event(learner, event_id=f"evt-{mode}-{learner.student_id}")
            started = time.monotonic()
            try:
                response = await api.post("/v1/submission-events", json=body, headers=EVENTS)
            except httpx.TransportError:
                answer = Answer(body, learner, started, time.monotonic() - started, None)
            else:
                is_problem = response.headers.get("content-type", "").startswith(
                    "application/problem+json"
                )
                answer = Answer(
                    body,
                    learner,
                    started,
                    time.monotonic() - started,
                    response.status_code,
                    response.headers.get("content-type", ""),
                    response.json().get("code") if is_problem else None,
                )
            outage.answers.append(answer)
            await asyncio.sleep(PACE_SECONDS)

    senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
    await asyncio.sleep(BEFORE_SECONDS)
    outage.cut_at = time.monotonic()
    await proxy.cut(mode)
    while time.monotonic() - outage.cut_at < OUTAGE_SECONDS[mode]:
        outage.readiness_during.append((await api.get("/readyz")).status_code)
        await asyncio.sleep(0.5)
    outage.restored_at = time.monotonic()
    await proxy.restore()
    while outage.recovery_seconds() is None and time.monotonic() - outage.restored_at < 30:
        await asyncio.sleep(0.05)
    await asyncio.sleep(AFTER_SECONDS)
    stop.set()
    await asyncio.gather(*senders)
    return outage


@pytest.mark.timeout(180)
async def test_a_database_outage_answers_503_quickly_and_loses_nothing_acknowledged(
    postgres_url: str, tmp_path: Path, tool_keys_dir: Path, figures: Figures
) -> None:
    server = make_url(databases.POSTGRES_SERVER_URL)
    config = SandboxConfig(throttle=ThrottleSettings(enabled=False))
    async with (
        run_sandbox(config) as sandbox,
        TcpProxy(server.host or "127.0.0.1", server.port or 5432) as proxy,
    ):
        via_proxy = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
        env = service_env(
            via_proxy.render_as_string(hide_password=False),
            var_dir=tmp_path,
            keys_dir=tool_keys_dir,
        )
        service = await start_service(
            env, log_path=tmp_path / "service.log", extra_args=("--no-workers",)
        )
        try:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as api:
                room = await seed_class(api, sandbox, tool_keys_dir, students=STUDENTS)
                await launch_all(api, room)
                first, second = room.learners[:RESET_STUDENTS], room.learners[RESET_STUDENTS:]
                outages = [
                    await send_events_through(api, proxy, room, first, "reset"),
                    await send_events_through(api, proxy, room, second, "blackhole"),
                ]
                resent_status: Counter[int] = Counter()
                answers = [answer for outage in outages for answer in outage.answers]
                acknowledged = {a.event_id for a in answers if a.status and a.status < 300}
                sent = {a.event_id: a.learner for a in answers}
                # Formative resends what was not acknowledged, byte for byte (same event_id),
                # as a careful client does: a lost answer may hide a commit.
                for answer in answers:
                    if answer.event_id not in acknowledged:
                        response = await post_until_answered(
                            api, "/v1/submission-events", answer.body, headers=EVENTS
                        )
                        assert response.status_code in (200, 202), response.text
                        resent_status[response.status_code] += 1
            log_records = service.log_records()
        finally:
            await service.terminate()

    for outage in outages:
        during = outage.during()
        refused = [a for a in during if a.status == 503]
        assert refused, f"{outage.mode}: no request met the outage"
        for answer in during:
            assert answer.status is not None, f"{outage.mode}: a request got no HTTP answer"
            assert answer.status in (200, 202, 503), answer
            assert answer.seconds < ANSWER_BOUND_SECONDS, answer
            if answer.status == 503:
                assert answer.content_type.startswith("application/problem+json"), answer
                assert answer.code == "database_unavailable", answer
        assert 503 in outage.readiness_during, outage.readiness_during
        recovery = outage.recovery_seconds()
        assert recovery is not None and recovery < RECOVERY_BOUND_SECONDS
        figures.record(f"{outage.mode}_requests_during_outage", len(during))
        figures.record(f"{outage.mode}_answered_503", len(refused))
        figures.record(
            f"{outage.mode}_slowest_answer_during_outage_s",
            round(max(a.seconds for a in during), 3),
        )
        figures.record(f"{outage.mode}_recovery_after_db_returns_s", round(recovery, 3))

    stored = await event_decisions(postgres_url, room.formative_id)
    missing = sorted(acknowledged - set(stored))
    assert not missing, f"acknowledged but not stored: {missing[:10]}"
    assert set(stored) == set(sent)
    assert set(stored.values()) == {"queued"}
    assert await jobs_by_status(postgres_url, room.formative_id) == {"pending": len(sent)}
    figures.record("events_acknowledged_during_the_outages", len(acknowledged))
    figures.record("events_stored_after_resends", len(stored))
    # 200 = the refused-looking request had been committed after all (its answer was lost).
    figures.record("resent_after_503_answered", dict(resent_status))
    api_records = [r for r in log_records if str(r.get("logger", "")).startswith("passback.api")]
    assert not [r for r in api_records if r["level"] == "error"], api_records[:3]
