"""Pacing against one rate bucket: the requests in flight of the hosts that share it.

Canvas charges a developer key's AGS requests to a leaky bucket per *database cluster*
(``lti_advantage:<client_id>-<cluster>``, canvas-ags.md §7): 50 units reserved for each request
in flight, requests refused (403 "Rate Limit Exceeded") while the bucket is at its mark. A
**bucket group** (`BucketGroup`) holds the hosts believed to share one bucket (app.delivery.
grouping learns which):

- Its limit on requests in flight is AIMD on `X-Rate-Limit-Remaining` and throttling (see
  `LanePolicy`): straight to what the bucket says it holds before the first sign of pressure,
  then a request per round trip for each request of room, a cut when refused, and never above
  the smallest capacity the last moments' answers allow.
- Room the bucket reports is shared with whatever else fills it (hosts not yet known to share
  it, other instances, other tools of the key): a group takes its part of the room in
  proportion to its part of the load, so users of one bucket that grow at once grow into its
  room together, not each into all of it.
- When throttled, the whole group pauses: requests wait in line instead of each being refused
  and backed off on its own; when the pause ends the oldest waiting request probes; refused, the
  pause doubles and the prober goes to the back of the line; once a probe gets through the line
  moves again. A storm costs a group one refused request per pause.
- A request holds one of the group's slots, then one of the instance-wide `shared` slots
  (`worker_concurrency`), which every group shares. When hosts regroup, their requests in
  flight count in their new groups.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from app.delivery.policy import LanePolicy
from app.lti.outcomes import Outcome

LATENCY_SMOOTHING = 0.2
"""Weight of the newest request in a smoothed latency."""
JOBS_PER_SLOT = 6
"""Jobs under way per request slot: enough to keep a slot busy while others write results."""
CAPACITY_WINDOW = 1.0
"""Seconds of answers whose smallest capacity bound caps the limit."""


class Member(Protocol):
    """A host of a group (app.delivery.lanes.HostLane), as the group's slots count it."""

    held: int
    """Its requests holding a slot of its group."""

    @property
    def group(self) -> BucketGroup: ...


class Slots:
    """A semaphore whose size may change while it is held (asyncio, one loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, *, ahead: bool = False) -> None:
        """Take a slot, waiting in line for one; `ahead`: at the front of the line."""
        while self.taken >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            if ahead:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self.wake()  # pass on the wake-up this waiter received
                raise
        self.taken += 1

    def release(self) -> None:
        self.taken -= 1
        self.wake()

    def resize(self, size: int) -> None:
        self.size = size
        self.wake()

    def wake(self) -> None:
        free = self.size - self.taken
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class BucketGroup:
    """The hosts that share one rate bucket: their request slots (adaptive to the bucket's
    answers) and the throttle's pause and probe.

    A request takes one of the group's slots, then one of the engine's `shared` slots (the
    instance-wide cap on requests in flight, `worker_concurrency`).
    """

    holds_throttled = True
    """Requests wait out the platform's throttling in `slot`: a throttled call may be resent
    at once (app.lti.ags.RequestGate)."""

    def __init__(self, policy: LanePolicy, shared: Slots, *, limit: float | None = None) -> None:
        self.policy = policy
        start = policy.initial_limit if limit is None else limit
        self.limit = min(max(start, policy.min_limit), policy.max_limit)
        self.jobs = 0
        """Jobs of the group's hosts under way in the engine."""
        self.latency = 0.1
        """Smoothed seconds per request: the window between two decreases."""
        self.slow_start = True
        """Grow by a request per answer until the first sign of pressure."""
        self._slots = Slots(self.slots)
        self._shared = shared
        self._last_decrease = -math.inf
        self._estimates: deque[tuple[float, float]] = deque()
        # Throttling: the pause, the probe in flight, and the requests waiting in line.
        self.storm = 0
        """Throttled probes in a row (0: the group is open)."""
        self._paused_until = -math.inf
        self._prober: asyncio.Task[Any] | None = None
        self._line: deque[tuple[asyncio.Future[None], asyncio.Task[Any] | None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.retired = False
        """Regrouped (`BucketMap`): its hosts are in new groups, which count their requests."""

    @property
    def slots(self) -> int:
        return max(1, math.floor(self.limit))

    @property
    def throttled(self) -> bool:
        """The platform throttles this group: requests wait for the pause, then a probe."""
        return self.storm > 0

    @property
    def requests(self) -> int:
        """Requests to the group's hosts in flight (or about to be)."""
        return self._slots.taken

    @property
    def waiting(self) -> int:
        return self._slots.waiting

    @property
    def job_room(self) -> int:
        """How many more jobs the group's hosts can take on now. While throttled, a slot's
        worth at most: due jobs wait in the queue rather than in the engine, yet one can
        probe."""
        slots = 1 if self.storm else self.slots
        return max(0, slots * JOBS_PER_SLOT - self.jobs)

    def inherit(self, groups: Iterable[BucketGroup], hosts: Iterable[Member]) -> None:
        """Start from the most careful state of the groups this one replaces, holding the
        slots its hosts' requests hold in them (their answers and ends come here now)."""
        olds = list(groups)
        self._slots.taken = sum(host.held for host in hosts)
        self.limit = min((old.limit for old in olds), default=self.limit)
        for old in olds:
            self.slow_start = self.slow_start and old.slow_start
            self.latency = max(self.latency, old.latency)
            if old.storm > self.storm:
                self.storm = old.storm
            self._paused_until = max(self._paused_until, old._paused_until)
        self._slots.resize(self.slots)

    def retire(self) -> None:
        """Replaced by new groups: whatever waits here goes on to its host's new group."""
        self.retired = True
        self._open()
        self._slots.resize(sys.maxsize)

    # --- the gate (app.lti.ags.RequestGate) ---------------------------------------------------

    def slot(self, *, ahead: bool = False) -> AbstractAsyncContextManager[None]:
        return self._slot(ahead)

    @asynccontextmanager
    async def _slot(self, ahead: bool) -> AsyncIterator[None]:
        await self.enter(None, ahead=ahead)
        started = time.monotonic()
        try:
            yield
        finally:
            self.leave(None, started)

    async def enter(self, host: Member | None, *, ahead: bool = False) -> bool:
        """Wait for a slot of this group, then an instance-wide one (`ahead`: at the front of
        their lines). False when the group was retired meanwhile (the host's new group is to
        be asked instead)."""
        while True:
            probe = await self._turn()
            try:
                await self._slots.acquire(ahead=ahead)
            except BaseException:
                self._probe_gone()
                raise
            if self.retired:
                self._slots.release()
                self._probe_gone()
                return False
            if probe or not self.storm:
                break
            # Throttling began while this request waited for a slot: back into the line.
            self._slots.release()
        if host is not None:
            host.held += 1
        try:
            await self._shared.acquire(ahead=ahead)
        except BaseException:
            self._holder(host).release(host)
            self._probe_gone()
            raise
        return True

    def leave(self, host: Member | None, started: float) -> None:
        """The request that `enter` let in is over (`started`: when it was sent)."""
        self._shared.release()
        self._holder(host).release(host, started)
        self._probe_gone()

    def _holder(self, host: Member | None) -> BucketGroup:
        """The group that counts a request of `host` now: the host's, which changes when the
        hosts regroup (a request entered through one group may end in another)."""
        return self if host is None else host.group

    def release(self, host: Member | None, started: float | None = None) -> None:
        if host is not None:
            host.held -= 1
        self._slots.release()
        if started is not None:
            self.latency += LATENCY_SMOOTHING * (time.monotonic() - started - self.latency)

    async def _turn(self) -> bool:
        """Wait while the group is throttled; True when this request is to probe the platform."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self.storm:
            if self._prober is not None and self._prober is me:
                return True
            if self._prober is None and not self._line and time.monotonic() >= self._paused_until:
                self._prober = me
                return True
            waiter: asyncio.Future[None] = loop.create_future()
            self._line.append((waiter, me))
            self._arm()
            try:
                await waiter
            except asyncio.CancelledError:
                if (waiter, me) in self._line:
                    self._line.remove((waiter, me))
                self._probe_gone()  # a turn given to this request passes on
                raise
        return False

    def _arm(self) -> None:
        """Give the next in line its turn when the pause ends (unless a probe is out)."""
        if self._timer is None and self._prober is None and self.storm:
            delay = max(0.0, self._paused_until - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._pause_over)

    def _pause_over(self) -> None:
        self._timer = None
        if self._prober is not None or not self.storm:
            return
        if time.monotonic() < self._paused_until:
            self._arm()  # the pause was extended (a Retry-After)
            return
        while self._line:
            waiter, task = self._line.popleft()
            if not waiter.done():
                self._prober = task
                waiter.set_result(None)
                return

    def _probe_gone(self) -> None:
        """The probe's request ended (or never started) without an answer about the storm."""
        if self._prober is not None and self._prober is asyncio.current_task():
            self._prober = None
            self._arm()

    def _open(self) -> None:
        """A probe got through: everyone in line goes (within the group's slots)."""
        self.storm = 0
        self._prober = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._line:
            waiter, _ = self._line.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _throttled(self, outcome: Outcome, now: float) -> None:
        """A refusal: pause the group (longer each time a probe is refused), then probe."""
        probing = self._prober is not None and self._prober is asyncio.current_task()
        if probing or not self.storm:
            # A new storm, or one that goes on: answers of requests sent before the pause
            # began say nothing new.
            self.storm += 1
            pause = min(
                self.policy.throttle_pause_max,
                max(self.latency, self.policy.throttle_pause) * 2.0 ** (self.storm - 1),
            )
            self._paused_until = max(self._paused_until, now + pause)
        if outcome.retry_after is not None:
            # Jobs told to wait longer go back to the queue (app.delivery.attempt); the group
            # probes again after its longest pause.
            wait = min(outcome.retry_after, self.policy.throttle_pause_max)
            self._paused_until = max(self._paused_until, now + wait)
        if probing:
            self._prober = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm()

    def observe(self, outcome: Outcome, *, mark: float = -math.inf) -> None:
        """Adjust the limit from one answer (called while the answered request holds its
        slot). Server errors and timeouts are the host's business (app.delivery.lanes), not the
        bucket's. `mark`: the highest remaining any host of the registration has seen (the
        group takes its share of the room by it, see the module docstring)."""
        policy = self.policy
        now = time.monotonic()
        remaining = outcome.rate_limit_remaining
        share = 1.0
        if remaining is not None and not outcome.throttled:
            others = (max(mark, remaining) - remaining) / policy.reservation - (self.requests - 1)
            share = self.requests / (self.requests + max(0.0, others))
        if outcome.throttled:
            # Refusals come back at once; without a pause every waiting request would be
            # sent into the full bucket and refused in turn.
            self._throttled(outcome, now)
            self._decrease(policy.throttle_decrease, now)
            self._slots.resize(self.slots)
            return
        if self._prober is not None and self._prober is asyncio.current_task():
            self._open()  # the probe got through: the storm is over
        if outcome.http_status is None:
            pass
        elif remaining is not None and self._busy() and self._above_capacity(remaining, now):
            # (Only while every slot is in use: with fewer in flight the limit holds nothing
            # back, and an answer the loop read late, after others that the platform sent
            # later, would understate the bucket.)
            self.limit = max(policy.min_limit, self._capacity_estimate() - policy.margin)
        elif remaining is not None and remaining < policy.ample_remaining:
            self.slow_start = False
            if remaining >= policy.healthy_remaining and self._busy():
                # Per round trip, one request more for each request of room beyond one:
                # quick while far from the mark, one at a time close to it.
                room = remaining / policy.reservation - 1
                self.limit = min(policy.max_limit, self.limit + share * room / self.limit)
        elif self._busy():
            if self.slow_start and remaining is not None:
                # Before the first sign of pressure, straight to what the bucket says it
                # holds (the answer's bound was just recorded above), not a request at a time.
                room = remaining / policy.reservation
                target = self._capacity_estimate() - policy.margin - (1.0 - share) * room
                self.limit = min(policy.max_limit, max(self.limit, target))
            else:
                step = 1.0 if self.slow_start else 1.0 / self.limit
                self.limit = min(policy.max_limit, self.limit + step)
        self._slots.resize(self.slots)

    def _above_capacity(self, remaining: float, now: float) -> bool:
        """Record what this answer says the bucket holds; is the limit above that?

        The bucket holds `remaining ÷ reservation` more requests besides the ones in flight
        when the platform answered. Those were at most this group's other requests (answers
        still on their way make the group's count higher), so each answer gives an upper bound
        of the bucket's capacity in requests, and the smallest bound of the last moments is
        the best estimate.
        """
        estimate = remaining / self.policy.reservation + (self.requests - 1)
        # A sliding-window minimum: bounds that can never be the smallest again are dropped.
        while self._estimates and self._estimates[-1][1] >= estimate:
            self._estimates.pop()
        self._estimates.append((now, estimate))
        horizon = now - max(CAPACITY_WINDOW, 10 * self.latency)
        while self._estimates[0][0] < horizon:
            self._estimates.popleft()
        return self.limit > self._capacity_estimate() - self.policy.margin

    def _capacity_estimate(self) -> float:
        """Requests the bucket admits at once: a request gets in while the bucket is below
        its mark, so a fraction of a reservation of room still admits one."""
        return math.ceil(self._estimates[0][1])

    def _busy(self) -> bool:
        """Every slot is taken: the limit, not the supply of work, holds deliveries back."""
        return self.requests >= self.slots

    def _decrease(self, factor: float, now: float) -> None:
        """At most once per round trip: one congestion event, one cut."""
        self.slow_start = False
        if now - self._last_decrease < self.latency:
            return
        self._last_decrease = now
        self.limit = max(self.policy.min_limit, self.limit * factor)
        self._slots.resize(self.slots)
