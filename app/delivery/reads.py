"""Line item reads for deliveries: shared while in progress, kept a few seconds for the jobs
that were queued before they began.

A delivery reads its line item's points before it posts, so the grade follows the points the
assignment has when the grade is sent, not when it was queued (SPEC §2.3). Reading once per
job would double the requests and make every newly claimed job wait a round trip with its
slot idle, so reads are shared in two ways:

- **In progress:** every delivery that wants the line item a read is fetching joins it.
- **Kept:** a finished read serves, for `keep` seconds after it began, the *first try* of
  any job queued before the read began. For such a job the read is as current as one of its
  own: every points change made before the job was queued is in it. A job queued after the
  read began (the teacher may have changed the points and then sent the grades again), a
  retry, and any job after `keep` read the line item again. A failed read is never kept.
- **Refreshed:** serving a read that is half `keep` old also starts the next read in the
  background, so a host with a backlog never stalls on an expired one.

Times are the engine clock's (the jobs' `created_at` are too); a read must have begun
strictly after the job was queued, so a frozen test clock never reuses one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.clock import Clock
from app.lti.ags import UNGATED, AgsClient, AgsError, RequestGate
from app.lti.ags_documents import LineItem
from app.lti.tokens import Registration

KEPT_MAX = 4096
"""Kept reads at most (an engine forgets expired ones when it has more)."""


class JoinedReadError(AgsError):
    """A shared line item read failed; its requests were made (and are counted) by the
    delivery that started it."""

    def __init__(self, error: AgsError) -> None:
        super().__init__(error.outcome, error.exchanges)


@dataclass(frozen=True)
class _Kept:
    began: datetime
    line_item: LineItem


class LineItemReads:
    """The line item reads of one engine's deliveries (see the module docstring)."""

    def __init__(self, ags: AgsClient, clock: Clock, *, keep: timedelta) -> None:
        self._ags = ags
        self._clock = clock
        self._keep = keep
        self._reading: dict[tuple[str, str], asyncio.Task[LineItem]] = {}
        self._kept: dict[tuple[str, str], _Kept] = {}

    async def read(
        self,
        platform: Registration,
        lineitem_url: str,
        gate: RequestGate = UNGATED,
        *,
        queued_at: datetime | None = None,
    ) -> LineItem:
        """The line item; `queued_at`, for a job's first try, lets a kept read serve it."""
        key = (platform.id, lineitem_url)
        if queued_at is not None:
            kept = self._kept.get(key)
            if kept is not None and kept.began > queued_at:
                age = self._clock() - kept.began
                if age < self._keep:
                    if age >= self._keep / 2 and key not in self._reading:
                        # Read again while this one still serves: jobs queued meanwhile
                        # find a fresh one instead of each waiting for a read of its own.
                        self._start(key, platform, lineitem_url, gate)
                    return kept.line_item
                del self._kept[key]
        task = self._reading.get(key)
        joined = task is not None
        if task is None:
            task = self._start(key, platform, lineitem_url, gate)
        try:
            return await asyncio.shield(task)
        except AgsError as error:
            if joined:
                raise JoinedReadError(error) from error
            raise

    def _start(
        self, key: tuple[str, str], platform: Registration, lineitem_url: str, gate: RequestGate
    ) -> asyncio.Task[LineItem]:
        task = asyncio.create_task(self._fetch(key, platform, lineitem_url, gate))
        self._reading[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return task

    async def close(self) -> None:
        """Cancel reads still in progress (a refresh nobody waits for); the engine stops."""
        tasks = list(self._reading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(
        self, key: tuple[str, str], platform: Registration, lineitem_url: str, gate: RequestGate
    ) -> LineItem:
        began = self._clock()
        line_item = await self._ags.read_line_item(platform, lineitem_url, gate=gate)
        kept = self._kept.get(key)
        if kept is None or kept.began < began:
            if len(self._kept) >= KEPT_MAX:
                self._forget_expired()
            self._kept[key] = _Kept(began, line_item)
        return line_item

    def _forget_expired(self) -> None:
        oldest = self._clock() - self._keep
        for key, kept in list(self._kept.items()):
            if kept.began <= oldest:
                del self._kept[key]
        if len(self._kept) >= KEPT_MAX:
            self._kept.clear()

    def _forget(self, key: tuple[str, str], done: asyncio.Task[LineItem]) -> None:
        if self._reading.get(key) is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so an unwatched failure is not reported as lost
