"""Delivery lanes: one per AGS host of a registration, grouped by the rate bucket they share.

Canvas charges a developer key's AGS requests to a leaky bucket per *database cluster*
(``lti_advantage:<client_id>-<cluster>``, canvas-ags.md §7): 50 units reserved for each request
in flight, requests refused (403 "Rate Limit Exceeded") while the bucket is at its mark. One
registration (one client_id for every Canvas Cloud school) reaches many hosts on many clusters,
and which host is on which cluster is not told. So pacing has two levels:

- A **host lane** (`HostLane`) per (registration, AGS origin ``scheme://host:port``): the unit
  of claiming and of failure isolation. Its own limit on requests in flight follows the host's
  health only: 5xx answers, timeouts and connection errors shrink it (by `decrease`, once per
  round trip), answers that get through grow it back. The engine claims jobs per host lane, up
  to `JOBS_PER_SLOT` per slot, so a host that is down or slow holds a few requests and a few
  jobs, its other jobs wait in the database, and the other hosts lose nothing.
- A **bucket group** (`BucketGroup`) per set of hosts believed to share one bucket: the
  throttle-aware limit (AIMD on `X-Rate-Limit-Remaining` and throttling, see `LanePolicy`), and
  the pause and probe when throttled: the whole group pauses, requests wait in line instead of
  each being refused and backed off on its own; when the pause ends the oldest waiting request
  probes; refused, the pause doubles and the prober goes to the back of the line; once a probe
  gets through the line moves again. A storm costs a group one refused request per pause.
- The instance-wide cap (`shared`, `worker_concurrency`) covers every group.
- A host that answers nothing usable (`failures_to_rest` times in a row: 5xx, timeouts,
  connection errors or garbage, counted per try of a job, a shared read once) **rests**: the engine
  moves its pending jobs' next try to the rest's end in the database (every instance then
  leaves them alone) and claims none of its jobs meanwhile; then one job probes. A probe that
  fails doubles the rest (up to `rest_max`); any usable answer ends it. A dead or garbage-
  spewing host costs a few tries per rest, not a try per job per backoff.

A request takes a host slot, then a group slot, then a shared slot, always in that order.

**Learning the groups** (`BucketMap`, one per registration). Every host starts in a group of
its own. Each answer of host A that carries `X-Rate-Limit-Remaining` (a throttled one counts as
remaining 0: the bucket was full) tells how many reservations A's bucket holds besides A's own
other requests in flight: y = (mark − remaining) ÷ reservation − (A's requests − 1), the mark
being the highest remaining seen. If A shares its bucket with another host B, y is B's
requests in flight, x (plus the cost charged, small until the bucket fills); if not, y is
that cost alone, about 0. So for every other host B with at least `min_load` requests in
flight, the answer votes "shared" when y ≥ x − `tolerance` (A's remaining moves with B's load;
A is throttled while B's load fills the bucket) and "separate" when y ≤ `tolerance`; an answer
with y below −`tolerance` was counted late by a busy event loop and is ignored. Votes fade
(`GroupingPolicy.keep` per vote, `half_life` in seconds). A pair is linked when the votes of
both directions say shared (at least `min_votes`, and `ratio` times the others), unlinked when
either direction's say separate the same way, or when no vote came for `evidence_horizon`
seconds (the evidence went away). Groups are the connected components of linked pairs; a new
group starts from the most careful state of the groups it replaces.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.delivery.policy import GroupingPolicy, LanePolicy
from app.lti.outcomes import Action, Outcome, RetryCode

_STRUGGLING = frozenset({RetryCode.platform_error, RetryCode.timeout, RetryCode.connection_error})
_UNUSABLE = _STRUGGLING | {RetryCode.invalid_answer}
"""Answers (or their absence) that tell nothing good about a host: what makes it rest."""
LATENCY_SMOOTHING = 0.2
JOBS_PER_SLOT = 6
JUDGED_REMEMBERED = 64
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
        self.mark = -math.inf
        """The highest remaining seen: the bucket's high-water mark as the platform reports it."""
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

    def inherit(self, groups: Iterable[BucketGroup], hosts: Iterable[HostLane]) -> None:
        """Start from the most careful state of the groups this one replaces, holding the
        slots its hosts' requests hold in them (their answers and ends come here now)."""
        olds = list(groups)
        self._slots.taken = sum(host.held for host in hosts)
        self.limit = min((old.limit for old in olds), default=self.limit)
        for old in olds:
            self.slow_start = self.slow_start and old.slow_start
            self.latency = max(self.latency, old.latency)
            self.mark = max(self.mark, old.mark)
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

    def slot(self) -> AbstractAsyncContextManager[None]:
        return self._slot()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        await self.enter(None)
        started = time.monotonic()
        try:
            yield
        finally:
            self.leave(None, started)

    async def enter(self, host: HostLane | None) -> bool:
        """Wait for a slot of this group, then an instance-wide one. False when the group was
        retired meanwhile (the host's new group is to be asked instead)."""
        while True:
            probe = await self._turn()
            try:
                await self._slots.acquire()
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
            await self._shared.acquire()
        except BaseException:
            self._holder(host).release(host)
            self._probe_gone()
            raise
        return True

    def leave(self, host: HostLane | None, started: float) -> None:
        """The request that `enter` let in is over (`started`: when it was sent)."""
        self._shared.release()
        self._holder(host).release(host, started)
        self._probe_gone()

    def _holder(self, host: HostLane | None) -> BucketGroup:
        """The group that counts a request of `host` now: the host's, which changes when the
        hosts regroup (a request entered through one group may end in another)."""
        return self if host is None else host.group

    def release(self, host: HostLane | None, started: float | None = None) -> None:
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
        slot). Server errors and timeouts are the host's business (`HostLane`), not the
        bucket's. `mark`: the highest remaining any host of the registration has seen.

        Room the bucket reports is shared with whatever else fills it (hosts not yet known to
        share it, other instances, other tools of the key): the group takes its part of the
        room in proportion to its part of the load, so users of one bucket that grow at once
        grow into its room together, not each into all of it.
        """
        policy = self.policy
        now = time.monotonic()
        remaining = outcome.rate_limit_remaining
        share = 1.0
        if remaining is not None and not outcome.throttled:
            self.mark = max(self.mark, mark, remaining)
            others = (self.mark - remaining) / policy.reservation - (self.requests - 1)
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

    def slot(self) -> AbstractAsyncContextManager[None]:
        return self._slot()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        await self._slots.acquire()
        try:
            group = self.group
            while not await group.enter(self):
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


@dataclass
class _Votes:
    """What the answers of one host said about sharing a bucket with another, with
    forgetting (`keep` per vote, and a half-life in seconds)."""

    shared: float = 0.0
    separate: float = 0.0
    at: float = -math.inf

    def add(self, shared: bool, now: float, keep: float, half_life: float) -> None:
        fade = keep * 0.5 ** ((now - self.at) / half_life) if self.at > -math.inf else 0.0
        self.shared = self.shared * fade + (1.0 if shared else 0.0)
        self.separate = self.separate * fade + (0.0 if shared else 1.0)
        self.at = now

    def says_shared(self, policy: GroupingPolicy) -> bool:
        return self.shared >= policy.min_votes and self.shared >= policy.ratio * self.separate

    def says_separate(self, policy: GroupingPolicy) -> bool:
        return self.separate >= policy.min_votes and self.separate >= policy.ratio * self.shared


class BucketMap:
    """The host lanes of one registration and the bucket groups they fall into (see the
    module docstring)."""

    def __init__(
        self, platform_id: str, policy: LanePolicy, grouping: GroupingPolicy, shared: Slots
    ) -> None:
        self.platform_id = platform_id
        self.policy = policy
        self.grouping = grouping
        self.shared = shared
        self.hosts: dict[str, HostLane] = {}
        self._busy: dict[str, HostLane] = {}
        """Hosts with jobs under way: the ones whose load can be told apart."""
        self._votes: dict[tuple[str, str], _Votes] = {}
        """(answering host, other host) → what the first's answers said of sharing."""
        self._links: set[frozenset[str]] = set()
        self.mark = -math.inf
        """The highest remaining seen: the bucket's mark as the platform reports it."""
        self.regroups = 0
        """How often the groups changed (figures)."""

    def host(self, origin: str) -> HostLane:
        lane = self.hosts.get(origin)
        if lane is None:
            lane = self.hosts[origin] = HostLane(self.platform_id, origin, self.policy, self)
        return lane

    def groups(self) -> list[list[HostLane]]:
        """The hosts of each group (hosts alone in theirs included)."""
        by_group: dict[int, list[HostLane]] = {}
        for lane in self.hosts.values():
            by_group.setdefault(id(lane.group), []).append(lane)
        return list(by_group.values())

    def busy(self, lane: HostLane) -> None:
        self._busy[lane.origin] = lane

    def idle(self, lane: HostLane) -> None:
        self._busy.pop(lane.origin, None)

    def sample(self, lane: HostLane, remaining: float) -> None:
        """One answer of `lane` with the bucket's remaining room: evidence for each pair."""
        self.mark = max(self.mark, remaining)
        if len(self._busy) < 2 and not self._links:
            return
        grouping = self.grouping
        # Reservations in the bucket beyond this host's own other requests: the others'
        # requests if they share it (plus the charged cost, small while the bucket is not
        # full), else that cost alone.
        beyond_own = (self.mark - remaining) / self.policy.reservation - (lane.sent - 1)
        if beyond_own < -grouping.tolerance:
            return  # answers counted late (a busy loop): this one cannot be read
        now = time.monotonic()
        changed = False
        for other in self._busy.values():
            load = other.sent
            if other is lane or load < grouping.min_load:
                continue
            if beyond_own >= load - grouping.tolerance:
                shared = True
            elif beyond_own <= grouping.tolerance:
                shared = False
            else:
                continue
            key = (lane.origin, other.origin)
            votes = self._votes.get(key)
            if votes is None:
                votes = self._votes[key] = _Votes()
            votes.add(shared, now, grouping.keep, grouping.half_life)
            changed |= self._judge(lane.origin, other.origin)
        if changed:
            self._regroup()

    def _judge(self, first: str, second: str) -> bool:
        """Link or unlink a pair on the votes of both directions; True if that changed."""
        pair = frozenset((first, second))
        ways = [self._votes.get((first, second)), self._votes.get((second, first))]
        if pair not in self._links:
            if all(way is not None and way.says_shared(self.grouping) for way in ways):
                self._links.add(pair)
                return True
        elif any(way is not None and way.says_separate(self.grouping) for way in ways):
            self._links.discard(pair)
            return True
        return False

    def forget_stale(self) -> None:
        """Evidence older than the horizon is gone: its links go too (the hosts split)."""
        horizon = time.monotonic() - self.grouping.evidence_horizon
        stale = [key for key, votes in self._votes.items() if votes.at < horizon]
        for key in stale:
            del self._votes[key]
        kept = {
            pair
            for pair in self._links
            if any(key in self._votes for key in (tuple(pair), tuple(reversed(tuple(pair)))))
        }
        if kept != self._links:
            self._links = kept
            self._regroup()

    def _regroup(self) -> None:
        """Groups become the connected components of the links; a component that is not an
        existing group gets a new group, started from its hosts' old groups."""
        parent = {origin: origin for origin in self.hosts}

        def root(origin: str) -> str:
            while parent[origin] != origin:
                parent[origin] = parent[parent[origin]]
                origin = parent[origin]
            return origin

        for pair in self._links:
            first, second = tuple(pair)
            if first in parent and second in parent:
                parent[root(first)] = root(second)
        components: dict[str, list[HostLane]] = {}
        for origin, lane in self.hosts.items():
            components.setdefault(root(origin), []).append(lane)
        self.regroups += 1
        sizes = Counter(id(lane.group) for lane in self.hosts.values())
        replaced: dict[int, BucketGroup] = {}
        for members in components.values():
            current = members[0].group
            if all(lane.group is current for lane in members) and sizes[id(current)] == len(
                members
            ):
                continue  # already a group of exactly these hosts
            olds = {id(lane.group): lane.group for lane in members}
            replaced.update(olds)
            group = BucketGroup(self.policy, self.shared)
            group.inherit(olds.values(), members)
            for lane in members:
                lane.group = group
                group.jobs += lane.jobs
        for old in replaced.values():
            old.retire()
