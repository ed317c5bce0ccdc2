"""Prometheus metrics of one instance, in a registry owned by its context (no globals).

Besides ours: the process and Python collectors (CPU, memory, file descriptors, GC) on the
same registry, `passback_build_info`, and HTTP requests by route template and status (counted
by the request middleware, which already times every request). No `_created` series: they
double the output and Prometheus does not need them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import platform
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.lti.outcomes import Action, Outcome

disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide switch

DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
"""The route label of requests no route matched (404s): their paths would be unbounded."""


def package_version() -> str:
    try:
        return version("passback")
    except PackageNotFoundError:  # pragma: no cover (running from a tree never installed)
        return "0+unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("passback_build", "The running release.", registry=self.registry).info(
            {"version": package_version(), "python": platform.python_version()}
        )
        self.http = HttpRequestStats()
        self.registry.register(self.http)
        self.events = Counter(
            "passback_events_total",
            "Submission events received, by decision.",
            ["decision"],
            registry=self.registry,
        )
        self._events_by_decision: dict[str, Counter] = {}
        self.intake_batch_events = Histogram(
            "passback_intake_batch_events",
            "Submission events written together in one batch (more under load).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.launches = Counter(
            "passback_launches_total",
            "Launches received, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "passback_jobs_finished_total",
            "Jobs that reached a final status, by status and outcome code.",
            ["status", "code"],
            registry=self.registry,
        )
        self.jobs_quarantined = Counter(
            "passback_jobs_quarantined_total",
            "Job rows set aside because they could not be read back (see the runbook).",
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "passback_delivery_seconds",
            "Time from a job's creation to its delivery.",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.platform_responses = Counter(
            "passback_platform_responses_total",
            "Answers from platforms to AGS calls, by class (ok, retryable, throttled, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.token_requests = Counter(
            "passback_token_requests_total",
            "Access-token requests sent to platforms, by result.",
            ["result"],
            registry=self.registry,
        )
        self.throttle_events = Counter(
            "passback_throttle_events_total",
            "Times a platform throttled us (403 Rate Limit Exceeded or 429).",
            registry=self.registry,
        )
        self.host_rests = Counter(
            "passback_host_rests_total",
            "Times an AGS host that gave no usable answer was rested (its jobs wait in the "
            "database, then one probes).",
            registry=self.registry,
        )
        self.jobs_by_status = Gauge(
            "passback_jobs",
            "Jobs in the database, by status (read at scrape time).",
            ["status"],
            registry=self.registry,
        )
        self.oldest_pending_seconds = Gauge(
            "passback_oldest_pending_job_age_seconds",
            "Age of the oldest pending job (0 when none); alert when it grows.",
            registry=self.registry,
        )

    # --- what instrumented code calls (one line at each place something happens) -----------

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered (status 0: none was sent, e.g. the client went away)."""
        self.http.answered(method, route, status, seconds)

    def event_decided(self, decision: str) -> None:
        counter = self._events_by_decision.get(decision)
        if counter is None:  # (looking a label up costs more than the increment: kept)
            counter = self._events_by_decision[decision] = self.events.labels(decision=decision)
        counter.inc()

    def launch_recorded(self, outcome: str) -> None:
        """`outcome`: `gradable`, `not_gradable`, or the refusal code."""
        self.launches.labels(outcome=outcome).inc()

    def platform_answered(self, outcome: Outcome) -> None:
        """One answer to an AGS call, by class: ok, throttled, no_answer (network error or
        timeout), or what it makes the engine do (retry, failed, superseded, …)."""
        self.platform_responses.labels(outcome=answer_class(outcome)).inc()
        if outcome.throttled:
            self.throttle_events.inc()

    def job_finished(self, status: str, code: str | None, seconds_since_created: float) -> None:
        """A job reached a final status; a delivered one also records its end-to-end time."""
        self.jobs_finished.labels(status=status, code=code or "").inc()
        if status == "delivered":
            self.delivery_seconds.observe(max(0.0, seconds_since_created))

    def job_quarantined(self) -> None:
        """A claimed job row could not be read and was quarantined."""
        self.jobs_quarantined.inc()

    def host_rested(self) -> None:
        """An AGS host began a rest (app.delivery.lanes)."""
        self.host_rests.inc()

    def token_requested(self, result: str) -> None:
        """`result`: `ok`, or the outcome code of a refused or failed token request."""
        self.token_requests.labels(result=result).inc()


class HttpRequestStats(Collector):
    """HTTP requests by method, route template and status, with their latency histogram.

    Kept as plain numbers and turned into metric families at scrape time: the event loop is
    the only writer (and scrapes run on it too), so the per-request cost is one dict look-up,
    a bisect and three additions, a quarter of prometheus_client's locked Counter and
    Histogram updates on the hot intake path.
    """

    def __init__(self) -> None:
        self._bounds = (*HTTP_BUCKETS, math.inf)
        # (method, route, status) -> [count, seconds, bucket counts (not cumulative)...]
        self._stats: dict[tuple[str, str, int], list[float]] = {}

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        stats = self._stats.get(key)
        if stats is None:
            if method not in HTTP_METHODS:  # a client's made-up method: one label for all
                key = ("other", route, status)
            stats = self._stats.get(key) or [0.0] * (2 + len(self._bounds))
            self._stats[key] = stats
        stats[0] += 1
        stats[1] += seconds
        stats[2 + bisect.bisect_left(self._bounds, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "passback_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        by_route: dict[tuple[str, str], list[float]] = {}
        for (method, route, status), stats in self._stats.items():
            requests.add_metric([method, route, str(status)], stats[0])
            total = by_route.setdefault((method, route), [0.0] * len(stats))
            for index, value in enumerate(stats):
                total[index] += value
        yield requests
        latency = HistogramMetricFamily(
            "passback_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            labels=["method", "route"],
        )
        for (method, route), total in by_route.items():
            cumulative = list(itertools.accumulate(total[2:]))
            buckets = [
                (floatToGoString(bound), count)  # type: ignore[no-untyped-call]
                for bound, count in zip(self._bounds, cumulative, strict=True)
            ]
            latency.add_metric([method, route], buckets, sum_value=total[1])
        yield latency


def answer_class(outcome: Outcome) -> str:
    if outcome.throttled:
        return "throttled"
    if outcome.http_status is None:
        return "no_answer"
    if outcome.action is Action.delivered:
        return "ok"
    return outcome.action.value
