"""Delivery lanes: one per AGS host of a registration, grouped by the rate bucket they share.

One registration (one client_id for every Canvas Cloud school) reaches many hosts on many
Canvas database clusters, each cluster with its own rate bucket, and which host is on which
cluster is not told. So pacing has two levels:

- A **host lane** (`HostLane`) per (registration, AGS origin ``scheme://host:port``): the unit
  of claiming and of failure isolation. Its own limit on requests in flight follows the host's
  health only: 5xx answers, timeouts and connection errors shrink it (by `decrease`, once per
  round trip), answers that get through grow it back. The engine claims jobs per host lane, up
  to `JOBS_PER_SLOT` per slot, so a host that is down or slow holds a few requests and a few
  jobs, its other jobs wait in the database, and the other hosts lose nothing.
- A **bucket group** (app.delivery.buckets) per set of hosts believed to share one bucket: the
  throttle-aware limit, and the pause and probe when throttled. Which hosts share a bucket is
  learned from their answers (app.delivery.grouping).
- The instance-wide cap (`shared`, `worker_concurrency`) covers every group.
- A host that answers nothing usable (`failures_to_rest` times in a row: 5xx, timeouts,
  connection errors or garbage, counted per try of a job, a shared read once) **rests**: the engine
  moves its pending jobs' next try to the rest's end in the database (every instance then
  leaves them alone) and claims none of its jobs meanwhile; then one job probes. A probe that
  fails doubles the rest (up to `rest_max`); any usable answer ends it. A dead or garbage-
  spewing host costs a few tries per rest, not a try per job per backoff.

A request takes a host slot, then a group slot, then a shared slot, always in that order.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from app.delivery.buckets import JOBS_PER_SLOT, LATENCY_SMOOTHING, BucketGroup, Slots
from app.delivery.policy import LanePolicy
from app.lti.outcomes import Action, Outcome, RetryCode

if TYPE_CHECKING:
    from app.delivery.grouping import BucketMap

_STRUGGLING = frozenset({RetryCode.platform_error, RetryCode.timeout, RetryCode.connection_error})
_UNUSABLE = _STRUGGLING | {RetryCode.invalid_answer}
"""Answers (or their absence) that tell nothing good about a host: what makes it rest."""
JUDGED_REMEMBERED = 64


class HostLane:
    """One AGS host of a registration: its request slots (adaptive to the host's health), its
    jobs under way, and the bucket group it is in (`group`, which `BucketMap` may change).

    This is the gate (app.lti.ags.RequestGate) the engine gives a job's requests.
    """

    holds_throttled = True

    def __init__(
        self, platform_id: str, origin: str, policy: LanePolicy, bucket_map: BucketMap
    ) -> None:
        self.platform_id = platform_id
        self.origin = origin
        self.policy = policy
        self.limit = min(max(policy.initial_limit, policy.min_limit), policy.max_limit)
        self.jobs = 0
        """Jobs of this host under way in the engine."""
        self.dry = False
        """The last claim found less than it asked for; look again after a change."""
        self.sent = 0
        """Requests past every slot: sent to the host, or about to be."""
        self.held = 0
        """Requests holding a slot of the host's group (some may still wait for `shared`)."""
        self.latency = 0.1
        """Smoothed seconds per request: the window between two decreases."""
        self.group = BucketGroup(policy, bucket_map.shared)
        self._map = bucket_map
        self._slots = Slots(self.slots)
        self._last_decrease = -math.inf
        # Resting (see the module docstring): engine-clock times, as the jobs' are.
        self.failures = 0
        """Tries of this host's jobs in a row that got no usable answer."""
        self.rests = 0
        """Rests in a row: the host has not answered usably since the first (0: healthy)."""
        self.resting_until: datetime | None = None
        self._judged: deque[Outcome] = deque(maxlen=JUDGED_REMEMBERED)
        """Answers already counted (a shared read's answer reaches every job that joined it)."""

    @property
    def slots(self) -> int:
        return max(1, math.floor(self.limit))

    @property
    def requests(self) -> int:
        """Requests to this host in flight (or about to be)."""
        return self._slots.taken

    @property
    def throttled(self) -> bool:
        return self.group.throttled

    @property
    def free_jobs(self) -> int:
        """How many more jobs this host can take on now: its own slots' worth, within what
        its group can take on. After a rest, one job at a time until one gets an answer."""
        if self.rests:
            return 0 if self.jobs else min(1, self.group.job_room)
        own = max(0, self.slots * JOBS_PER_SLOT - self.jobs)
        return min(own, self.group.job_room)

    def resting(self, now: datetime) -> bool:
        return self.resting_until is not None and now < self.resting_until

    def try_ended(self, outcomes: Sequence[Outcome], now: datetime) -> datetime | None:
        """Judge the host by the answers one job's try got (its own, and those of a read it
        shared, each counted once; a try without any says nothing). Returns when a rest that
        begins now ends (the caller defers the host's jobs to then), else None."""
        if any(o.http_status is not None and o.code not in _UNUSABLE for o in outcomes):
            self.failures = self.rests = 0
            self.resting_until = None
            return None
        unusable = [
            outcome
            for outcome in outcomes
            if outcome.action is Action.retry
            and outcome.code in _UNUSABLE
            and not any(outcome is judged for judged in self._judged)
        ]
        if not unusable:
            return None
        self._judged.extend(unusable)
        self.failures += 1
        if self.resting(now):
            return None  # a try that began before the rest did
        if not self.rests and self.failures < self.policy.failures_to_rest:
            return None
        self.rests += 1
        policy = self.policy
        seconds = min(policy.rest_max, policy.rest_first * 2.0 ** (self.rests - 1))
        self.resting_until = now + timedelta(seconds=seconds)
        return self.resting_until

    def job_started(self) -> None:
        self.jobs += 1
        self.group.jobs += 1
        self._map.busy(self)

    def job_ended(self) -> None:
        self.jobs -= 1
        self.group.jobs -= 1
        if self.jobs == 0:
            self._map.idle(self)

    # --- the gate (app.lti.ags.RequestGate) ---------------------------------------------------

    def slot(self, *, ahead: bool = False) -> AbstractAsyncContextManager[None]:
        return self._slot(ahead)

    @asynccontextmanager
    async def _slot(self, ahead: bool) -> AsyncIterator[None]:
        await self._slots.acquire(ahead=ahead)
        try:
            group = self.group
            while not await group.enter(self, ahead=ahead):
                group = self.group  # regrouped while it waited
            self.sent += 1
            started = time.monotonic()
            try:
                yield
            finally:
                self.sent -= 1
                group.leave(self, started)
                elapsed = time.monotonic() - started
                self.latency += LATENCY_SMOOTHING * (elapsed - self.latency)
        finally:
            self._slots.release()

    def observe(self, outcome: Outcome) -> None:
        """Judge one answer: the host's health here, the bucket in the group, and the answer
        as evidence of which hosts share a bucket (called while its request holds its slot)."""
        if outcome.action is Action.retry and outcome.code in _STRUGGLING:
            self._decrease(time.monotonic())
        elif (
            outcome.http_status is not None
            and not outcome.throttled
            and self.requests >= self.slots
        ):
            # Answered, and the host's limit held work back: one more (it only stands in
            # the way after the host struggled; the group's limit paces the bucket, and a
            # host never needs more than its group allows). A host that never struggled
            # follows its group's limit at once.
            grown = self.limit + 1.0
            if self._last_decrease == -math.inf:
                grown = max(grown, self.group.limit)
            self.limit = min(self.policy.max_limit, grown, self.group.limit + 1.0)
            self._slots.resize(self.slots)
        remaining = 0.0 if outcome.throttled else outcome.rate_limit_remaining
        if remaining is not None:
            self._map.sample(self, remaining)
        self.group.observe(outcome, mark=self._map.mark)

    def _decrease(self, now: float) -> None:
        """At most once per round trip: one sign of trouble, one cut."""
        if now - self._last_decrease < self.latency:
            return
        self._last_decrease = now
        self.limit = max(self.policy.min_limit, self.limit * self.policy.decrease)
        self._slots.resize(self.slots)
