"""Requests that arrive together are written together: a micro-batcher.

Each caller hands in one item and waits for its own result. When no batch is running, an
item starts one at once (no waiting for company, so a quiet service answers as fast as a
single write). While batches run, arrivals queue; a further batch starts beside them only
once `overlap_from` items wait (up to `max_in_flight` batches at once), and a batch that
ends hands its slot to those waiting. A batch takes up to `max_size` items. The busier the
service, the larger the batches, and the fewer round trips and commits each item costs;
the threshold keeps overlapping batches from being small ones, which would cost more per
item on both sides than they save by overlapping.

Items that conflict (the same key, see `keys_of`) never share a batch: the later one waits
for a later batch, so a batch never holds two writes of one row and items keep the order in
which they arrived. A batch that fails as a whole fails the items still waiting with the
same error at once, so that during an outage no caller waits for more than one batch's try.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    keys: tuple[Hashable, ...]
    future: asyncio.Future[Result]


class MicroBatcher(Generic[Item, Result]):
    """Runs `process` on batches of the items submitted; `process` answers one outcome per
    item, in order (an exception it raises is every item's outcome)."""

    def __init__(
        self,
        process: Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        keys_of: Callable[[Item], Iterable[Hashable]],
        max_size: int,
        max_in_flight: int,
        overlap_from: int = 1,
    ) -> None:
        if max_size < 1 or max_in_flight < 1 or overlap_from < 1:
            raise ValueError(
                "a batch holds at least one item, at least one batch runs, and a batch "
                "beside others starts for at least one item"
            )
        self._process = process
        self._keys_of = keys_of
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._overlap_from = overlap_from
        self._waiting: list[_Waiting[Item, Result]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """The item's result once its batch has run (or the batch's error)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, tuple(self._keys_of(item)), future))
        self._start_batches()
        # A caller that goes away (client disconnect) cancels only its wait: the batch runs
        # in its own task, for the others in it and for a write that may be committed.
        return await future

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    def _start_batches(self) -> None:
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            if self._in_flight and len(self._waiting) < self._overlap_from:
                return  # too few to be worth a batch of their own beside those running
            batch = self._take_batch()
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _take_batch(self) -> list[_Waiting[Item, Result]]:
        batch: list[_Waiting[Item, Result]] = []
        held: list[_Waiting[Item, Result]] = []
        taken_keys: set[Hashable] = set()
        for waiting in self._waiting:
            if len(batch) < self._max_size and taken_keys.isdisjoint(waiting.keys):
                batch.append(waiting)
            else:
                held.append(waiting)
            # A held item's keys stay reserved too: nothing after it may overtake it.
            taken_keys.update(waiting.keys)
        self._waiting = held
        return batch

    async def _run(self, batch: list[_Waiting[Item, Result]]) -> None:
        try:
            outcomes: Sequence[Result | BaseException] = await self._process(
                [waiting.item for waiting in batch]
            )
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except Exception as error:
            # A fault of the whole batch (the database unreachable, say) would meet those
            # waiting for a slot as well: they fail now rather than after waiting for it.
            batch = [*batch, *self._waiting]
            self._waiting = []
            outcomes = [error] * len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_batches()
