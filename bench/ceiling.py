"""The best B/A any client could reach in bench/clusters.py: a simulation, no sockets.

    .venv/bin/python -m bench.ceiling [--students 100] [--assignments 12] [--latency-ms 300]

The client here knows the bucket exactly and has no overhead: it sends a score post whenever
the sandbox's own `Throttle` (Canvas's numbers: high-water 600, 50 reserved per request in
flight, leak 10/s, 0.1 charged per request) would admit it, keeping a margin below the mark (one
reservation, then none), and every request takes exactly `--latency-ms`. Before its first post it
waits for a token and a line item read (two round trips: the points are read before a grade
is sent, SPEC §2.3). Time is simulated, so the figures do not depend on the machine.

Scenario A puts every post on one bucket, B a quarter of them on each of four buckets
(buckets do not interact, so one of B's four stands for all). Over A's longer run the leak
drains the bucket's count under the reservations of the requests in flight, so the bucket
admits more requests at once as the run goes on; B's shorter run gets less of that, and pays
its fixed start over fewer seconds. What is printed is the ceiling of B/A for a client that
is never refused.
"""

from __future__ import annotations

import argparse
import heapq

from app.sandbox.config import ThrottleSettings
from app.sandbox.throttle import Admission, Throttle

KEY = "lti_advantage:client-cluster1"
START_TRIPS = 2
"""Round trips before the first post: a token, then the line item read."""
STEP = 0.001
"""Seconds between looks for room (the client sends as soon as the bucket admits)."""


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def deliver(posts: int, *, latency: float, margin: int) -> tuple[float, int, float]:
    """Seconds to deliver `posts` on one bucket, the most in flight at once, and the mean in
    flight while posting."""
    settings = ThrottleSettings()
    clock = SimulatedClock()
    throttle = Throttle(settings, clock)
    clock.now = START_TRIPS * latency  # a token, then the line item read
    started = clock.now
    in_flight: list[tuple[float, int, Admission]] = []
    sent = answered = peak = 0
    held = 0.0
    while answered < posts:
        while in_flight and in_flight[0][0] <= clock.now:
            _, _, admission = heapq.heappop(in_flight)
            throttle.complete(admission, settings.request_cost)
            answered += 1
        while sent < posts:
            level = throttle.levels().get(KEY, 0.0)
            if level + margin * settings.up_front_cost >= settings.high_water:
                break
            admission = throttle.admit(KEY)
            if admission is None:
                break
            heapq.heappush(in_flight, (clock.now + latency, sent, admission))
            sent += 1
        peak = max(peak, len(in_flight))
        held += len(in_flight) * STEP
        clock.now += STEP
    return clock.now, peak, held / (clock.now - started)


def main(arguments: argparse.Namespace) -> None:
    posts = arguments.students * arguments.assignments
    latency = arguments.latency_ms / 1000
    print(
        f"a client that knows the bucket and has no overhead, {arguments.latency_ms} ms per "
        f"call, a token and a read before the first post; {posts} posts per scenario"
    )
    for margin in (1, 0):
        one, one_peak, one_mean = deliver(posts, latency=latency, margin=margin)
        four, four_peak, four_mean = deliver(posts // 4, latency=latency, margin=margin)
        print(
            f"margin {margin}: A {posts / one:5.1f} scores/s ({one:5.2f} s, in flight mean "
            f"{one_mean:.1f}, peak {one_peak}); B {posts / four:5.1f} scores/s ({four:5.2f} s, "
            f"in flight per bucket mean {four_mean:.1f}, peak {four_peak}); "
            f"B/A = {one / four:.2f}"
        )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--assignments", type=int, default=12, help="a multiple of 4")
    parser.add_argument("--latency-ms", type=int, default=300)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_arguments())
