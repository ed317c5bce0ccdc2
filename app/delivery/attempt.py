"""One delivery attempt of one job: read the points, compute the score, post it, decide.

Knows nothing of SQL or scheduling: it takes a leased job and returns a `JobFinish` saying
what the store should record (the new status, the attempts, when to try again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from app.clock import Clock
from app.delivery.policy import DeliveryPolicy
from app.grading.score import GradeMode, GradeSpec, ScoreToSend, score_to_send
from app.lti.ags import UNGATED, AgsClient, AgsError, Exchange, LineItem, RequestGate, Score
from app.lti.outcomes import Action, FailureCode, Outcome
from app.lti.tokens import Registration
from app.store.jobs import AttemptRecord, JobFinish
from app.store.models import JobKind, JobStatus, PassbackJob, Platform

ZERO = Decimal(0)
RELEASED = "released"


class SharedReads:
    """Line item reads shared by the deliveries that want the same one at the same moment.

    Only reads in progress are shared, never kept: each delivery gets points read after it
    started, so a points change in Canvas is honoured by every delivery that follows it.
    """

    def __init__(self, ags: AgsClient) -> None:
        self._ags = ags
        self._reading: dict[tuple[str, str], asyncio.Task[LineItem]] = {}

    async def read(
        self, platform: Registration, lineitem_url: str, gate: RequestGate = UNGATED
    ) -> LineItem:
        key = (platform.id, lineitem_url)
        task = self._reading.get(key)
        if task is None:
            task = asyncio.create_task(self._ags.read_line_item(platform, lineitem_url, gate=gate))
            self._reading[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str], done: asyncio.Task[LineItem]) -> None:
        if self._reading.get(key) is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so an unwatched failure is not reported as lost


@dataclass
class Progress:
    """How far an attempt got: a stopped engine releases the job accordingly."""

    posting: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    """Every answer of this job's own requests (for the engine's counters)."""


def grade_spec(job: PassbackJob) -> GradeSpec:
    return GradeSpec(
        mode=GradeMode(job.mode),
        score=job.score,
        max_score=job.max_score,
        override_percent=job.override_percent,
        override_points=job.override_points,
        complete=job.complete,
    )


def _record(exchange: Exchange) -> AttemptRecord:
    outcome = exchange.outcome
    return AttemptRecord(
        started_at=exchange.started_at,
        finished_at=exchange.finished_at,
        http_status=outcome.http_status,
        outcome=outcome.code,
        message=outcome.message,
    )


@dataclass
class _Verdict:
    """The state of the job after this attempt, before it is turned into a JobFinish."""

    status: JobStatus
    code: str | None
    message: str | None
    next_attempt_at: datetime | None = None


class Attempt:
    """Delivers one leased job once (with the resends the rules allow within an attempt)."""

    def __init__(
        self,
        job: PassbackJob,
        platform: Platform | None,
        *,
        owner: str,
        ags: AgsClient,
        reads: SharedReads,
        clock: Clock,
        policy: DeliveryPolicy,
        gate: RequestGate = UNGATED,
    ) -> None:
        self.job = job
        self.platform = platform
        self.owner = owner
        self.progress = Progress()
        self._ags = ags
        self._reads = reads
        self._clock = clock
        self._policy = policy
        self._gate = gate
        self._records: list[AttemptRecord] = []
        self._new_submission = job.new_submission and not job.maybe_delivered
        self._maybe_delivered = job.maybe_delivered
        self._points: Decimal | None = None
        self._score: ScoreToSend | None = None

    async def run(self) -> JobFinish:
        job, platform = self.job, self.platform
        now = self._clock()
        if platform is None or not platform.active:
            return self._finish(
                _Verdict(
                    JobStatus.failed,
                    FailureCode.platform_not_registered,
                    "the platform registration is missing or deactivated",
                )
            )
        if now >= job.deadline_at:
            return self._finish(self._gave_up(job.platform_message))
        try:
            line_item = await self._reads.read(platform, job.lineitem_url, self._gate)
        except AgsError as error:
            return self._finish(self._after_failed_call(error))
        self._points = line_item.points if line_item.points is not None else ZERO
        if job.kind == JobKind.automatic and self._points <= ZERO:
            return self._finish(
                _Verdict(
                    JobStatus.failed,
                    FailureCode.canvas_points_missing,
                    f"the line item's scoreMaximum is {line_item.points}",
                )
            )
        self._score = score_to_send(grade_spec(job), self._points)
        return self._finish(await self._post(platform))

    async def _post(self, platform: Platform) -> _Verdict:
        assert self._score is not None
        while True:
            score = Score(
                user_id=self.job.lti_user_id,
                score_given=self._score.score_given,
                score_maximum=self._score.score_maximum,
                activity_progress=self._score.activity_progress,
                timestamp=self.job.score_timestamp,
                submitted_at=self.job.submitted_at,
                response_url=self.job.response_url,
                new_submission=self._new_submission,
                comment=self.job.comment,
            )
            self.progress.posting = True
            try:
                exchanges = await self._ags.post_score(
                    platform,
                    self.job.lineitem_url,
                    score,
                    after_unknown=self._maybe_delivered,
                    gate=self._gate,
                )
            except AgsError as error:
                self.progress.posting = False
                return self._after_failed_call(error)
            self.progress.posting = False
            self._note(exchanges)
            final = exchanges[-1].outcome
            if final.action is Action.resend_without_new_submission and self._new_submission:
                # Canvas counts a new submission as an attempt; a plain grade update is not one.
                self._new_submission = False
                continue
            return self._verdict(final)

    def _note(self, exchanges: Sequence[Exchange]) -> None:
        for exchange in exchanges:
            self._records.append(_record(exchange))
            self.progress.outcomes.append(exchange.outcome)
            if exchange.outcome.outcome_unknown:
                self._maybe_delivered = True
                self._new_submission = False

    def _after_failed_call(self, error: AgsError) -> _Verdict:
        if error.exchanges:
            self._note(error.exchanges)
        else:
            now = self._clock()
            outcome = error.outcome
            self.progress.outcomes.append(outcome)
            self._records.append(
                AttemptRecord(now, now, outcome.http_status, outcome.code, outcome.message)
            )
        return self._verdict(error.outcome)

    def _verdict(self, outcome: Outcome) -> _Verdict:
        if outcome.action is Action.delivered:
            return _Verdict(JobStatus.delivered, outcome.code, outcome.message)
        if outcome.action is Action.superseded:
            return _Verdict(JobStatus.superseded, outcome.code, outcome.message)
        if outcome.action is Action.failed:
            return _Verdict(JobStatus.failed, outcome.code, outcome.message)
        if outcome.action is Action.resend_without_new_submission:
            # Already sent without a new submission and still refused: nothing else to try.
            return _Verdict(JobStatus.failed, FailureCode.platform_rejected, outcome.message)
        return self._retry(outcome)

    def _retry(self, outcome: Outcome) -> _Verdict:
        now = self._clock()
        tries = self.job.attempt_count + max(1, len(self._records))
        delay = outcome.retry_after
        if delay is None:
            delay = self._policy.backoff(tries, throttled=outcome.throttled)
        next_attempt_at = now + timedelta(seconds=delay)
        if next_attempt_at >= self.job.deadline_at:
            return self._gave_up(outcome.message)
        return _Verdict(JobStatus.pending, outcome.code, outcome.message, next_attempt_at)

    @staticmethod
    def _gave_up(message: str | None) -> _Verdict:
        return _Verdict(JobStatus.failed, FailureCode.platform_unavailable, message)

    def _finish(self, verdict: _Verdict) -> JobFinish:
        now = self._clock()
        delivered = verdict.status is JobStatus.delivered
        return JobFinish(
            job_id=self.job.id,
            owner=self.owner,
            status=verdict.status,
            at=now,
            next_attempt_at=verdict.next_attempt_at or now,
            outcome_code=verdict.code,
            platform_message=verdict.message,
            new_submission=self._new_submission,
            maybe_delivered=self._maybe_delivered,
            attempts=tuple(self._records),
            canvas_points=self._points,
            score_given=self._score.score_given if self._score and delivered else None,
            score_maximum=self._score.score_maximum if self._score and delivered else None,
        )

    def released(self, *, delay: float = 0.0, code: str = RELEASED) -> JobFinish:
        """The job handed back unfinished (the engine is stopping, or the attempt crashed):
        due again after `delay` seconds."""
        now = self._clock()
        if self.progress.posting:
            self._maybe_delivered = True
            self._new_submission = False
        return JobFinish(
            job_id=self.job.id,
            owner=self.owner,
            status=JobStatus.pending,
            at=now,
            next_attempt_at=now + timedelta(seconds=delay),
            outcome_code=code,
            platform_message=self.job.platform_message,
            new_submission=self._new_submission,
            maybe_delivered=self._maybe_delivered,
            attempts=tuple(self._records),
        )
