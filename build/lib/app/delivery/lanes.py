"""One lane per platform registration: how many requests to it may be in flight at once.

All courses of one Canvas developer key share one rate bucket, and Canvas charges that bucket
for every request in flight. So a lane limits *requests* (each score post and each line item
read takes a slot for its duration) and adapts the limit to the platform's answers (see
`LanePolicy`). Each lane adapts on its own, so one Canvas's burst or outage does not hold up
another's deliveries.

The engine keeps up to `JOBS_PER_SLOT` jobs per slot under way, so slots stay busy while jobs
wait for a shared line item read or for the database.

When the platform throttles (Canvas's 403 "Rate Limit Exceeded", or a 429), the whole lane
pauses: requests wait in line instead of each being refused and backed off on its own. When the
pause ends one request, the oldest waiting, probes the platform; if it is throttled too, the
pause doubles and the prober goes to the back of the line; once a probe gets through, the line
moves again. So a storm costs the lane one refused request per pause, spread over its jobs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from app.delivery.policy import LanePolicy
from app.lti.outcomes import Action, Outcome, RetryCode

_STRUGGLING = frozenset({RetryCode.platform_error, RetryCode.timeout, RetryCode.connection_error})
LATENCY_SMOOTHING = 0.2
JOBS_PER_SLOT = 6
CAPACITY_WINDOW = 1.0
"""Seconds of answers whose smallest capacity bound caps the limit."""


class Slots:
    """A semaphore whose size may change while it is held (asyncio, one loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        while self.taken >= self.size:
            waiter = asyncio.get_running_loop().create_future()
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


class Lane:
    """A platform's request slots (adaptive) and its jobs under way.

    A request takes one of the lane's slots, then one of the engine's `shared` slots (the
    instance-wide cap on requests in flight, `worker_concurrency`).
    """

    holds_throttled = True
    """Requests wait out the platform's throttling in `slot`: a throttled call may be resent
    at once (app.lti.ags.RequestGate)."""

    def __init__(self, platform_id: str, policy: LanePolicy, shared: Slots) -> None:
        self.platform_id = platform_id
        self.policy = policy
        self.limit = min(max(policy.initial_limit, policy.min_limit), policy.max_limit)
        self.jobs = 0
        """Jobs of this platform under way in the engine."""
        self.dry = False
        """The last claim found less than it asked for; look again after a change."""
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
        """Throttled probes in a row (0: the lane is open)."""
        self._paused_until = -math.inf
        self._prober: asyncio.Task[Any] | None = None
        self._line: deque[tuple[asyncio.Future[None], asyncio.Task[Any] | None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def slots(self) -> int:
        return max(1, math.floor(self.limit))

    @property
    def throttled(self) -> bool:
        """The platform throttles this lane: requests wait for the pause, then a probe."""
        return self.storm > 0

    @property
    def requests(self) -> int:
        """Requests to this platform in flight (or about to be)."""
        return self._slots.taken

    @property
    def waiting(self) -> int:
        return self._slots.waiting

    @property
    def free_jobs(self) -> int:
        """How many more jobs the lane can take on now. While throttled, a slot's worth at
        most: due jobs wait in the queue rather than in the engine, yet one can probe."""
        slots = 1 if self.storm else self.slots
        return max(0, slots * JOBS_PER_SLOT - self.jobs)

    # --- the gate (app.lti.ags.RequestGate) ---------------------------------------------------

    def slot(self) -> AbstractAsyncContextManager[None]:
        return self._slot()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        while True:
            probe = await self._turn()
            try:
                await self._slots.acquire()
            except BaseException:
                self._probe_gone()
                raise
            if probe or not self.storm:
                break
            # Throttling began while this request waited for a slot: back into the line.
            self._slots.release()
        try:
            await self._shared.acquire()
        except BaseException:
            self._slots.release()
            self._probe_gone()
            raise
        started = time.monotonic()
        try:
            yield
        finally:
            self._shared.release()
            self._slots.release()
            self.latency += LATENCY_SMOOTHING * (time.monotonic() - started - self.latency)
            self._probe_gone()

    async def _turn(self) -> bool:
        """Wait while the lane is throttled; True when this request is to probe the platform."""
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
        """A probe got through: everyone in line goes (within the lane's slots)."""
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
        """A refusal: pause the lane (longer each time a probe is refused), then probe."""
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
            # Jobs told to wait longer go back to the queue (app.delivery.attempt); the lane
            # probes again after its longest pause.
            wait = min(outcome.retry_after, self.policy.throttle_pause_max)
            self._paused_until = max(self._paused_until, now + wait)
        if probing:
            self._prober = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm()

    def observe(self, outcome: Outcome) -> None:
        """Adjust the limit from one answer (called while the answered request holds its slot)."""
        policy = self.policy
        now = time.monotonic()
        remaining = outcome.rate_limit_remaining
        if outcome.throttled:
            # Refusals come back at once; without a pause every waiting request would be
            # sent into the full bucket and refused in turn.
            self._throttled(outcome, now)
            self._decrease(policy.throttle_decrease, now)
            self._slots.resize(self.slots)
            return
        if self._prober is not None and self._prober is asyncio.current_task():
            self._open()  # the probe got through: the storm is over
        if outcome.action is Action.retry and outcome.code in _STRUGGLING:
            self._decrease(policy.decrease, now)
        elif outcome.http_status is None:
            pass
        elif remaining is not None and self._above_capacity(remaining, now):
            self.limit = max(policy.min_limit, self._capacity_estimate() - policy.margin)
        elif remaining is not None and remaining < policy.ample_remaining:
            self.slow_start = False
            if remaining >= policy.healthy_remaining and self._busy():
                # Per round trip, one request more for each request of room beyond one:
                # quick while far from the mark, one at a time close to it.
                room = remaining / policy.reservation - 1
                self.limit = min(policy.max_limit, self.limit + room / self.limit)
        elif self._busy():
            step = 1.0 if self.slow_start else 1.0 / self.limit
            self.limit = min(policy.max_limit, self.limit + step)
        self._slots.resize(self.slots)

    def _above_capacity(self, remaining: float, now: float) -> bool:
        """Record what this answer says the bucket holds; is the limit above that?

        The bucket holds `remaining ÷ reservation` more requests besides the ones in flight
        when the platform answered. Those were at most this lane's other requests (answers
        still on their way make the lane's count higher), so each answer gives an upper bound
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
