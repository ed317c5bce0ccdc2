"""Prometheus metrics of one instance, in a registry owned by its context (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.lti.outcomes import Action, Outcome

DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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

    def token_requested(self, result: str) -> None:
        """`result`: `ok`, or the outcome code of a refused or failed token request."""
        self.token_requests.labels(result=result).inc()


def answer_class(outcome: Outcome) -> str:
    if outcome.throttled:
        return "throttled"
    if outcome.http_status is None:
        return "no_answer"
    if outcome.action is Action.delivered:
        return "ok"
    return outcome.action.value
