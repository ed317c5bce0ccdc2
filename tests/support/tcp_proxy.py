"""A TCP proxy on loopback that can cut the line: an outage of one peer, for one client only.

Put it between the service and PostgreSQL (the service's database URL names the proxy's port)
to make the database unreachable for that service without stopping the shared server::

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = database_url.set(port=proxy.port)
        ...
        await proxy.cut("reset")      # PostgreSQL went away: connections reset, new ones refused
        await proxy.cut("blackhole")  # a partition: nothing moves, nothing is answered
        await proxy.restore()         # the line is back

`reset` closes every relayed connection with a TCP reset and resets each new one at once.
`blackhole` accepts new connections but never reaches the upstream, and holds what existing
connections send in either direction; `restore` lets the held bytes through, as a healed
network would. Runs in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Coroutine
from typing import Any, Literal, Self

CutMode = Literal["reset", "blackhole"]
CHUNK = 65_536


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.mode: CutMode | None = None
        self.accepted = 0
        self.refused = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._links):
            _abort(client)
            _abort(upstream)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def connections(self) -> int:
        """Connections relayed right now."""
        return len(self._links)

    async def cut(self, mode: CutMode = "reset") -> None:
        self.mode = mode
        self._open.clear()
        if mode == "reset":
            for client, upstream in list(self._links):
                _abort(client)
                _abort(upstream)
            self._links.clear()

    async def restore(self) -> None:
        self.mode = None
        self._open.set()

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            self.refused += 1
            _abort(writer)
            return
        # In a blackhole the connection is accepted and then nothing happens until restored.
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.refused += 1
            _abort(writer)
            return
        self.accepted += 1
        link = (writer, up_writer)
        self._links.add(link)
        self._track(self._pump(reader, up_writer, link))
        self._track(self._pump(up_reader, writer, link))

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                # Held while the line is cut (a blackhole); a reset has aborted us already.
                await self._open.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for writer in link:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.close()
