"""How the delivery engine paces itself: concurrency, leases, polling, backoff.

Backoff is exponential with jitter (tenacity's wait strategies), computed from the job's stored
count of tries since it was last queued (an operator's retry starts it again; throttled answers
do not count) and written to `next_attempt_at`, so a restart does not reset it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random_exponential
from tenacity.wait import wait_base

from app.config import Settings

JOBS_PER_REQUEST = 4
"""Jobs under way per request the engine may have in flight: a job may wait for its line
item read (shared with others) before it posts, and results wait to be written, so with
several hosts at their limits two per request left slots idle."""


@dataclass(frozen=True)
class LanePolicy:
    """Requests in flight per bucket group (app.delivery.buckets) and per host (.lanes): AIMD on
    Canvas's throttle signals for a group, on errors for a host.

    Canvas reserves 50 units of a developer key's bucket for each request in flight and
    refuses requests once the bucket reaches its high-water mark (600);
    `X-Rate-Limit-Remaining` is the distance to that mark, so 50 remaining is room for one
    more request. While its slots are all busy, a lane grows by one request per answer with
    ample room, and by one request per round trip for each request of room beyond one with
    less; with room for one at most it holds. Answers also bound how many requests the
    bucket can hold at all (an answer may lag what is in flight, so the tightest bound of
    the last moments counts): the lane stays `margin` below that, shrinking at once when
    the bound falls (the bucket filled up: the key's other users, or cost piling up). It
    halves on 403 throttling and 429. A host's own limit shrinks by `decrease` on 5xx,
    timeouts and connection errors, and grows by one per answer while it holds work back.
    """

    initial_limit: float = 4.0
    min_limit: float = 1.0
    max_limit: float = 64.0
    ample_remaining: float = 300.0
    """At or above: one more request per answer (also when a platform sends no header)."""
    healthy_remaining: float = 100.0
    """At or above: grow by a request per round trip per request of room beyond one."""
    reservation: float = 50.0
    """What the platform reserves per request in flight (Canvas: 50)."""
    margin: float = 1.0
    """Requests kept free below the bucket's estimated capacity (other users of the key)."""
    decrease: float = 0.75
    throttle_decrease: float = 0.5
    throttle_pause: float = 0.1
    """Shortest pause after a refusal (seconds; at least a round trip). It doubles with each
    refused probe, up to `throttle_pause_max`; a Retry-After may lengthen it."""
    throttle_pause_max: float = 10.0
    failures_to_rest: int = 5
    """Times in a row a host answered nothing usable (5xx, timeouts, connection errors,
    garbage; counted per try of a job, a read shared by several tries once) before it rests:
    its jobs wait in the database, not in the engine."""
    rest_first: float = 5.0
    """Seconds of a host's first rest; each probe that fails doubles it, up to `rest_max`."""
    rest_max: float = 300.0


@dataclass(frozen=True)
class GroupingPolicy:
    """How hosts of a registration are found to share a rate bucket (app.delivery.grouping)."""

    min_load: int = 2
    """Requests another host must have in flight for an answer to say anything about it."""
    tolerance: float = 0.5
    """Reservations an answer may differ from a hypothesis and still vote for it."""
    min_votes: float = 8.0
    """Votes (weighted) a verdict needs."""
    ratio: float = 3.0
    """How many times the opposite votes a verdict needs."""
    keep: float = 0.97
    """Weight each vote leaves to the earlier ones (a memory of about 30)."""
    half_life: float = 30.0
    """Seconds in which evidence loses half its weight, besides `keep`."""
    evidence_horizon: float = 300.0
    """Seconds without new evidence after which a pair's fit and link are dropped."""


def _equal_jitter(first: float, maximum: float) -> wait_base:
    """Between half and all of first × 2^(n-1), capped at `maximum`."""
    half, half_cap = first / 2, maximum / 2
    return wait_exponential(multiplier=half, max=half_cap) + wait_random_exponential(
        multiplier=half, max=half_cap
    )


@dataclass(frozen=True)
class DeliveryPolicy:
    concurrency: int = 64
    """Requests to platforms in flight at once from this engine, all platforms together.
    Up to `JOBS_PER_REQUEST` times as many jobs are under way, so that requests never wait
    for the database or for a line item read another job is making."""
    poll_interval: float = 0.5
    """Seconds between looks for work when nothing rings the doorbell."""
    lease: timedelta = timedelta(seconds=120)
    claim_batch: int = 100
    flush_delay: float = 0.05
    """Seconds results wait to be written together with others (one transaction for many:
    at Canvas's pace, 5 ms wrote one or two a time, a third of the CPU per score)."""
    shutdown_grace: float = 10.0
    """Seconds a stopping engine lets running deliveries finish before releasing them."""
    platform_refresh: float = 5.0
    """Seconds a platform registration read from the database is reused."""
    line_item_keep: timedelta = timedelta(seconds=5)
    """How long a line item read serves the first tries of jobs queued before it began
    (app.delivery.reads)."""
    backoff_first: float = 2.0
    backoff_max: float = 3600.0
    throttle_backoff_first: float = 1.0
    throttle_backoff_max: float = 30.0
    throttle_hold: float = 120.0
    """Seconds a job waits in its throttled lane for the platform to take requests again,
    before it goes back to the queue with a throttle backoff."""
    database_retry_first: float = 0.2
    database_retry_max: float = 5.0
    """Pauses (seconds) between tries of a background step while the database is away."""
    lanes: LanePolicy = field(default_factory=LanePolicy)
    grouping: GroupingPolicy = field(default_factory=GroupingPolicy)

    @property
    def max_jobs(self) -> int:
        return self.concurrency * JOBS_PER_REQUEST

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> DeliveryPolicy:
        concurrency = max(1, settings.worker_concurrency)
        values: dict[str, object] = {
            "concurrency": concurrency,
            "poll_interval": settings.worker_poll_interval,
            "lease": timedelta(seconds=settings.lease_seconds),
            "lanes": LanePolicy(max_limit=float(concurrency)),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def backoff(self, attempt_number: int, *, throttled: bool = False) -> float:
        """Seconds before the next try after `attempt_number` tries."""
        if throttled:
            wait = _equal_jitter(self.throttle_backoff_first, self.throttle_backoff_max)
        else:
            wait = _equal_jitter(self.backoff_first, self.backoff_max)
        state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt_number)
        return float(wait(state))
