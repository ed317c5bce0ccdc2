"""A platform on loopback that answers garbage: the token endpoint, line items, scores and
results each answer as `kind` says (huge, deep, absurd numbers, wrong types, HTML, truncated,
or not at all), everything else as a plain platform would.

    platform = GarbagePlatform("points_1e400")
    async with platform.running() as base_url: ...   # token at {base_url}/token

`running(in_process=False)` serves it from a process of its own (uvicorn), so that making
garbage costs the test process nothing: for soaks that compare rates.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.sandbox import LoopbackServer

Send = Callable[[dict[str, Any]], Awaitable[None]]

DEEP = b"[" * 200_000 + b"]" * 200_000
HUGE_BYTES = 300 * 1024 * 1024
CHUNK = b" " * (1024 * 1024)
HANG_SECONDS = 3600.0

GOOD_TOKEN = (
    b'{"access_token": "garbage-platform-token", "token_type": "Bearer", "expires_in": 3600}'
)
GOOD_LINE_ITEM = b'{"id": "x", "label": "Quiz", "scoreMaximum": 10}'

# kind -> (endpoint it spoils, what it answers there)
TOKEN_KINDS = {
    "token_expires_1e12": b'{"access_token": "t", "expires_in": 1e12}',
    "token_expires_infinity": b'{"access_token": "t", "expires_in": Infinity}',
    "token_wrong_types": b'{"access_token": 5, "expires_in": {"s": 1}}',
    "token_a_list": b'["access_token", "t"]',
    "token_deep": DEEP,
}
LINE_ITEM_KINDS = {
    "points_1e400": b'{"id": "x", "scoreMaximum": 1e400}',
    "points_4000_digits": b'{"id": "x", "scoreMaximum": ' + b"9" * 4000 + b"}",
    "points_nan": b'{"id": "x", "scoreMaximum": NaN}',
    "points_wrong_type": b'{"id": 7, "label": [], "scoreMaximum": "ten"}',
    "line_item_deep": DEEP,
    "line_item_html": b"<html><body><h1>Maintenance</h1></body></html>",
    "line_item_truncated_json": b'{"id": "x", "scoreMaxi',
}
STREAM_KINDS = (
    "line_item_huge",
    "line_item_huge_declared",
    "line_item_gzip_bomb",
    "cut_connection",
)
KINDS = (*TOKEN_KINDS, *LINE_ITEM_KINDS, *STREAM_KINDS, "score_error_deep", "hang")


@cache
def gzip_bomb() -> bytes:
    """16 MB of zeros (four times the cap), gzip-compressed to about 16 kB."""
    return gzip.compress(b"\0" * (16 * 1024 * 1024))


class GarbagePlatform:
    """The ASGI app (see the module docstring); `calls` counts requests by endpoint."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown garbage kind {kind!r}")
        self.kind = kind
        self.calls: Counter[str] = Counter()

    @asynccontextmanager
    async def running(self, *, in_process: bool = True) -> AsyncIterator[str]:
        if not in_process:
            async with _in_a_process(self.kind) as base_url:
                yield base_url
            return
        server = LoopbackServer()
        await asyncio.to_thread(server.start, self)
        try:
            yield server.base_url
        finally:
            await asyncio.to_thread(server.stop)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        path: str = scope["path"]
        endpoint = (
            "token"
            if path == "/token"
            else "scores"
            if path.endswith("/scores")
            else "results"
            if path.endswith("/results")
            else "line_item"
        )
        self.calls[endpoint] += 1
        if self.kind == "hang":
            await asyncio.sleep(HANG_SECONDS)
            return
        if endpoint == "token":
            await _answer(send, 200, TOKEN_KINDS.get(self.kind, GOOD_TOKEN))
        elif endpoint == "scores":
            if self.kind == "score_error_deep":
                await _answer(send, 500, DEEP)
            else:
                await _answer(send, 200, DEEP)  # accepted; the body says nothing usable
        elif endpoint == "results":
            await _answer(send, 200, DEEP)
        elif self.kind in LINE_ITEM_KINDS:
            await _answer(send, 200, LINE_ITEM_KINDS[self.kind])
        elif self.kind in STREAM_KINDS:
            await _stream(send, self.kind)
        else:
            await _answer(send, 200, GOOD_LINE_ITEM)


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    content_type = b"text/html" if body.startswith(b"<") else b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, kind: str) -> None:
    if kind == "line_item_gzip_bomb":
        await _answer(send, 200, gzip_bomb(), [(b"content-encoding", b"gzip")])
        return
    headers = [(b"content-type", b"application/json")]
    if kind == "line_item_huge_declared":
        headers.append((b"content-length", str(HUGE_BYTES).encode()))
    if kind == "cut_connection":
        headers.append((b"content-length", b"1000"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if kind == "cut_connection":
        # Fewer bytes than declared, then the server gives up on the connection.
        await send({"type": "http.response.body", "body": b'{"id": "x"', "more_body": True})
        raise ConnectionAbortedError("the garbage platform cuts the answer short")
    sent = 0
    try:
        while sent < HUGE_BYTES:
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
            sent += len(CHUNK)
        await send({"type": "http.response.body", "body": b""})
    except OSError:
        return  # the client hung up (as it should, past its cap)


def expected_codes() -> dict[str, str]:
    """What each kind's attempt is recorded as (the outcome code)."""
    codes = {kind: "invalid_answer" for kind in (*TOKEN_KINDS, *LINE_ITEM_KINDS, *STREAM_KINDS)}
    codes["cut_connection"] = "connection_error"
    codes["score_error_deep"] = "platform_error"
    codes["hang"] = "timeout"
    return codes


KIND_VARIABLE = "PASSBACK_GARBAGE_KIND"
REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 30.0


def from_environment() -> GarbagePlatform:
    """The app of a garbage platform process (uvicorn --factory)."""
    return GarbagePlatform(os.environ[KIND_VARIABLE])


@asynccontextmanager
async def _in_a_process(kind: str) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:from_environment",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "critical",
        "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, KIND_VARIABLE: kind})
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} garbage platform did not start") from None
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()
