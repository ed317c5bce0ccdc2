"""A value read at most once every few seconds, with one read in flight.

For probes that callers may hammer (`/metrics` scrapes, `/readyz` bursts): every caller gets
the last outcome while it is younger than `max_age`; past that, the first caller starts one
read and every other caller waits for that same read. A failed read is an outcome too (kept
as long as a value would be), so a burst against a sick database makes one attempt, not one
per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        *,
        max_age: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._monotonic = monotonic
        self._outcome: tuple[float, T | None, BaseException | None] | None = None
        self._reading: asyncio.Task[T] | None = None

    async def get(self) -> T:
        outcome = self._outcome
        if outcome is not None and self._monotonic() - outcome[0] < self._max_age:
            _, value, error = outcome
            if error is not None:
                raise error
            return value  # type: ignore[return-value]
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_once())
            self._reading.add_done_callback(_retrieve)
        # Shielded: a caller that gives up (a client gone) does not cancel everyone's read.
        return await asyncio.shield(self._reading)

    async def _read_once(self) -> T:
        try:
            value = await self._read()
        except Exception as exc:
            self._outcome = (self._monotonic(), None, exc)
            raise
        else:
            self._outcome = (self._monotonic(), value, None)
            return value
        finally:
            self._reading = None


def _retrieve(task: asyncio.Task[T]) -> None:
    """Mark the outcome seen: callers that all went away leave no "never retrieved" warning."""
    if not task.cancelled():
        task.exception()
