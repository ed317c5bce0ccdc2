"""One lane per platform registration: how many of its deliveries may run at once.

All courses of one Canvas developer key share one rate bucket, so the limit is per
registration, and each lane adapts on its own: one Canvas's burst or outage does not hold up
another's deliveries.
"""

from __future__ import annotations

import math

from app.delivery.policy import LanePolicy
from app.lti.outcomes import Action, Outcome, RetryCode

_STRUGGLING = frozenset({RetryCode.platform_error, RetryCode.timeout, RetryCode.connection_error})
LATENCY_SMOOTHING = 0.2


class Lane:
    """Additive increase, multiplicative decrease, driven by the platform's answers."""

    def __init__(self, platform_id: str, policy: LanePolicy) -> None:
        self.platform_id = platform_id
        self.policy = policy
        self.limit = min(max(policy.initial_limit, policy.min_limit), policy.max_limit)
        self.in_flight = 0
        self.dry = False
        """The last claim found less than it asked for; look again after a change."""
        self.slow_start = True
        self.latency = 0.1
        """Smoothed seconds per delivery: the window between two decreases."""
        self._last_decrease = -math.inf

    @property
    def free(self) -> int:
        return max(0, math.floor(self.limit) - self.in_flight)

    def record_latency(self, seconds: float) -> None:
        self.latency += LATENCY_SMOOTHING * (seconds - self.latency)

    def observe(self, outcome: Outcome, now: float) -> None:
        """Adjust the limit from one answer; `now` is monotonic seconds."""
        policy = self.policy
        if outcome.throttled:
            self._decrease(policy.throttle_decrease, now)
            return
        if outcome.action is Action.retry and outcome.code in _STRUGGLING:
            self._decrease(policy.decrease, now)
            return
        if outcome.http_status is None:
            return
        remaining = outcome.rate_limit_remaining
        if remaining is not None and remaining < policy.low_remaining:
            self._decrease(policy.decrease, now)
        elif remaining is None or remaining >= policy.ample_remaining:
            self._grow(1.0 if self.slow_start else 1.0 / self.limit)
        elif remaining >= policy.healthy_remaining:
            self.slow_start = False
            self._grow(1.0 / self.limit)
        else:
            self.slow_start = False

    def _grow(self, step: float) -> None:
        self.limit = min(self.policy.max_limit, self.limit + step)

    def _decrease(self, factor: float, now: float) -> None:
        """At most once per round trip: one congestion event, one cut."""
        self.slow_start = False
        if now - self._last_decrease < self.latency:
            return
        self._last_decrease = now
        self.limit = max(self.policy.min_limit, self.limit * factor)
