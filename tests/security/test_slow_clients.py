"""Slow and vanishing clients against a real `passback serve` (uvicorn) over sockets: a body
that trickles in is cut off with a 408 and a closed connection; a client that leaves in the
middle of its body is a quiet log line, not an error with a traceback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.auth import EVENTS_KEY
from tests.support.processes import ServiceProcess, service_env, start_service

BODY_TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="module")
async def service(
    tmp_path_factory: pytest.TempPathFactory, tool_keys_dir: Path
) -> AsyncIterator[ServiceProcess]:
    var_dir = tmp_path_factory.mktemp("slow")
    env = service_env(
        f"sqlite+aiosqlite:///{var_dir / 'passback.db'}",
        var_dir=var_dir,
        keys_dir=tool_keys_dir,
        body_read_timeout_seconds=BODY_TIMEOUT_SECONDS,
        run_workers="false",
    )
    running = await start_service(env, log_path=var_dir / "service.log")
    try:
        yield running
    finally:
        await running.terminate()


def request_head(length: int) -> bytes:
    return (
        "POST /v1/submission-events HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {EVENTS_KEY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_is_closed(
    service: ServiceProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    started = time.monotonic()
    writer.write(request_head(1_000) + b'{"event_id": ')
    await writer.drain()
    try:
        # The client never sends the rest; the service answers and hangs up on its own.
        answer = await asyncio.wait_for(reader.read(), timeout=BODY_TIMEOUT_SECONDS + 10)
    finally:
        writer.close()
    waited = time.monotonic() - started

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["code"] == "request_timeout"
    assert waited >= BODY_TIMEOUT_SECONDS * 0.9  # (reader.read() returned: it was closed)


async def test_a_client_leaving_in_the_middle_of_its_body_is_not_an_unhandled_error(
    service: ServiceProcess,
) -> None:
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(request_head(1_000) + b'{"event_id": "evt-gone", "type": ')
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.5)

    records = service.log_records()
    assert not [r for r in records if r.get("level") in ("ERROR", "CRITICAL", "error")], records
    assert "Traceback" not in service.log_text()
    assert "unhandled error" not in service.log_text()
    leaving = [r for r in records if "disconnected" in str(r.get("message", ""))]
    assert 1 <= len(leaving) <= 3, records  # one line per client at most
