"""One delivery attempt of one job: read the points (app.delivery.reads), compute the score,
post it, decide.

Knows nothing of SQL or scheduling: it takes a leased job and returns a `JobFinish` saying
what the store should record (the new status, the attempts, when to try again).

Two things happen inside an attempt rather than between attempts:

- **Unknown outcomes.** A job that is to open the student's Canvas submission, after an
  attempt whose outcome is unknown (a timeout or a reset after sending, a worker that died)
  or when an earlier job of the same submission may have landed, first reads the student's
  result. Our own score already there: delivered, nothing is sent again. A result of this
  submission there: the score is sent as an update (never a second Canvas attempt). No
  result of it: the score is sent opening the submission, as decided when it was queued.
  When the result cannot be read or does not tell, the score is sent as an update.
- **Throttling.** When the platform throttles a call, the job waits in its lane, which holds
  all its requests until the platform takes them again (app.delivery.buckets), and calls
  again, for up to `policy.throttle_hold` seconds; throttled answers do not count toward
  the job's backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum

from app.clock import Clock
from app.delivery.policy import DeliveryPolicy
from app.delivery.reads import JoinedReadError, LineItemReads
from app.grading.score import GradeMode, GradeSpec, ScoreToSend, score_to_send
from app.lti.ags import UNGATED, AgsClient, AgsError, Exchange, RequestGate
from app.lti.ags_documents import LineItem, Result, Score, iso_millis
from app.lti.outcomes import MESSAGE_LIMIT, Action, FailureCode, Outcome
from app.store.finishes import AttemptRecord, JobFinish
from app.store.models import JobKind, JobStatus, PassbackJob, Platform

log = logging.getLogger("passback.delivery")

ZERO = Decimal(0)
RELEASED = "released"
CRASHED = "crashed"
CAUSES_REMEMBERED = 256

# Attempt outcomes of the result read before a resend (SPEC §2.4: never a second attempt).
DELIVERED_EARLIER = "delivered_earlier"
SUBMISSION_FOUND = "submission_found"
SUBMISSION_ABSENT = "submission_absent"
RESULT_UNCLEAR = "result_unclear"
RESULT_UNREADABLE = "result_unreadable"


@dataclass(frozen=True)
class PlatformInfo:
    """What a delivery needs of a platform registration: plain values, safe to share and to
    keep (an ORM row would expire with the transaction that read it)."""

    id: str
    client_id: str
    token_url: str
    audience: str
    allowed_hosts: tuple[str, ...]
    active: bool

    @classmethod
    def of(cls, platform: Platform) -> PlatformInfo:
        return cls(
            id=platform.id,
            client_id=platform.client_id,
            token_url=platform.token_url,
            audience=platform.audience,
            allowed_hosts=tuple(platform.allowed_hosts or ()),
            active=bool(platform.active),
        )


class TracebackOnce:
    """Full tracebacks of unforeseen errors in deliveries, once per cause (the error's type and
    where it was raised) per engine: a cause that repeats on every try of a job, or on every
    job of a platform, is then told by each try's one log line."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()

    def report(self, error: Exception, job_id: int) -> None:
        frames = traceback.extract_tb(error.__traceback__)
        filename, line = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
        cause = (type(error).__name__, filename, line)
        if cause in self._seen:
            return
        if len(self._seen) >= CAUSES_REMEMBERED:
            self._seen.clear()
        self._seen.add(cause)
        log.error(
            "delivery of job %s failed unexpectedly (%s); the job is retried with backoff, and "
            "this cause is not traced again",
            job_id,
            type(error).__name__,
            exc_info=error,
        )


@dataclass
class Progress:
    """How far an attempt got: a stopped engine releases the job accordingly."""

    posting: bool = False
    holding: bool = False
    """Waiting in a throttled lane (the engine does not count it against its job limit)."""
    outcomes: list[Outcome] = field(default_factory=list)
    """Every answer of this job's own requests (for the engine's counters)."""
    shared: list[Outcome] = field(default_factory=list)
    """Answers of requests another job made for this one too (a shared line item read)."""


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


class Found(Enum):
    """What the student's result says about a post of this job's submission."""

    ours = "our score is there"
    submission = "a post of this submission landed; the score there differs"
    nothing = "no post of this submission landed"
    unclear = "cannot tell"


def _same_instant(stored: object, ours: datetime | None) -> bool:
    if ours is None or stored is None:
        return ours is None and stored is None
    if not isinstance(stored, str):
        return False
    try:
        moment = datetime.fromisoformat(stored)
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    return iso_millis(moment) == iso_millis(ours)


def found_in(result: Result | None, job: PassbackJob, score: ScoreToSend) -> Found:
    """Has a post of the job's submission landed, judging by the student's result?

    Canvas echoes the submission extension of the last accepted post: its submission time and
    response URL name the submission. Without them, only an equal score tells.
    """
    if result is None:
        return Found.nothing
    same_score = result.score == score.score_given and result.maximum == score.score_maximum
    stored = result.submission
    if "submitted_at" in stored or "submission_data" in stored:
        if not _same_instant(stored.get("submitted_at"), job.submitted_at):
            return Found.nothing
        if stored.get("submission_data") != job.response_url:
            return Found.nothing
        return Found.ours if same_score else Found.submission
    return Found.ours if same_score else Found.unclear


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
        platform: PlatformInfo | None,
        *,
        owner: str,
        ags: AgsClient,
        reads: LineItemReads,
        clock: Clock,
        policy: DeliveryPolicy,
        gate: RequestGate = UNGATED,
        tracebacks: TracebackOnce | None = None,
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
        self._tracebacks = tracebacks or TracebackOnce()
        self._records: list[AttemptRecord] = []
        self._tries = 0
        """Records that count toward the backoff."""
        self._throttled = 0
        self._held_since: float | None = None
        self._opens = job.new_submission
        """The job opens the student's submission (unless a post of it turns out to be there)."""
        self._maybe_delivered = job.maybe_delivered
        self._unconfirmed = job.submission_unconfirmed
        self._new_submission = self._opens and not (self._maybe_delivered or self._unconfirmed)
        """What the next post says."""
        self._points: Decimal | None = None
        self._score: ScoreToSend | None = None
        self._queued_at = job.created_at if job.attempt_count == 0 else None
        """A first try may use a line item read begun after the job was queued
        (app.delivery.reads); a retry reads again."""

    async def run(self) -> JobFinish:
        """Deliver; whatever goes wrong ends this attempt as a recorded try with backoff."""
        try:
            return await self._run()
        except Exception as error:  # a bug, or an answer nothing above foresaw
            return self._crashed(error)

    def _crashed(self, error: Exception) -> JobFinish:
        self._tracebacks.report(error, self.job.id)
        if self.progress.posting:  # the score may have landed
            self._maybe_delivered = True
            self._new_submission = False
        self.progress.posting = self.progress.holding = False
        now = self._clock()
        message = f"{type(error).__name__}: {error}"[:MESSAGE_LIMIT]
        self._records.append(AttemptRecord(now, now, None, CRASHED, message))
        self._tries += 1
        return self._finish(self._retry(Outcome(Action.retry, CRASHED, message=message)))

    async def _run(self) -> JobFinish:
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
        line_item = await self._read_line_item(platform)
        if isinstance(line_item, _Verdict):
            return self._finish(line_item)
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
        if self._opens and (self._maybe_delivered or self._unconfirmed):
            landed = await self._look_for_submission(platform)
            if landed is not None:
                return self._finish(landed)
        return self._finish(await self._post(platform))

    async def _read_line_item(self, platform: PlatformInfo) -> LineItem | _Verdict:
        while True:
            try:
                line_item = await self._reads.read(
                    platform, self.job.lineitem_url, self._gate, queued_at=self._queued_at
                )
                self.progress.holding = False
                return line_item
            except AgsError as error:
                own = not isinstance(error, JoinedReadError)
                if not self._hold(error.outcome, error.exchanges, own=own):
                    return self._after_failed_call(error, own=own)
                if own:
                    # Let the jobs that shared this read start the next one: the storm's
                    # refused probes are spread over the jobs, not all charged to one.
                    await asyncio.sleep(0)

    async def _look_for_submission(self, platform: PlatformInfo) -> _Verdict | None:
        """Read the student's result before a post that would open the submission; decide
        what that post says. Returns a verdict when nothing is left to send."""
        assert self._score is not None
        while True:
            try:
                read = await self._ags.read_result(
                    platform, self.job.lineitem_url, self.job.lti_user_id, gate=self._gate
                )
                break
            except AgsError as error:
                if self._hold(error.outcome, error.exchanges):
                    continue
                outcome = error.outcome
                detail = f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code
                self._note_read(error.exchanges, outcome, RESULT_UNREADABLE, detail)
                return None  # cannot tell: the post opens no submission
        self.progress.holding = False
        found = found_in(read.result, self.job, self._score)
        final = read.exchanges[-1].outcome if read.exchanges else None
        if found is Found.ours and self._maybe_delivered and not self._unconfirmed:
            self._note_read(read.exchanges, final, DELIVERED_EARLIER, found.value)
            return _Verdict(JobStatus.delivered, DELIVERED_EARLIER, found.value)
        if found is Found.nothing:
            self._note_read(read.exchanges, final, SUBMISSION_ABSENT, found.value)
            self._new_submission = True
            self._maybe_delivered = self._unconfirmed = False
        elif found is Found.unclear:
            self._note_read(read.exchanges, final, RESULT_UNCLEAR, found.value)
        else:
            self._note_read(read.exchanges, final, SUBMISSION_FOUND, found.value)
            self._opens = self._new_submission = False
            self._unconfirmed = False
        return None

    async def _post(self, platform: PlatformInfo) -> _Verdict:
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
                self.progress.posting = self.progress.holding = False
                return self._after_failed_call(error)
            self.progress.posting = False
            final = exchanges[-1].outcome
            if self._hold(final, exchanges):  # else no longer holding
                continue
            self._note(exchanges)
            if final.action is Action.resend_without_new_submission and self._new_submission:
                # Canvas counts a new submission as an attempt; a plain grade update is not one.
                self._opens = self._new_submission = False
                continue
            return self._verdict(final)

    def _hold(self, outcome: Outcome, exchanges: Sequence[Exchange], *, own: bool = True) -> bool:
        """A throttled call: should the job wait in its lane and call again? (Noted if so.)

        Only answers the lane saw pause it; a Retry-After longer than a lane's longest pause,
        or beyond what the job may still wait or its deadline, sends it back to the queue.
        """
        self.progress.holding = False
        if not (outcome.throttled and exchanges and self._gate.holds_throttled):
            return False
        loop_now = time.monotonic()
        if self._held_since is None:
            self._held_since = loop_now
        left = self._policy.throttle_hold - (loop_now - self._held_since)
        wait = outcome.retry_after or 0.0
        if wait > self._policy.lanes.throttle_pause_max or wait >= left:
            return False  # a long wait is better spent in the queue (it survives a restart)
        if self._clock() + timedelta(seconds=wait) >= self.job.deadline_at:
            return False
        if own:
            self._note(exchanges)
        self.progress.holding = True
        return True

    def _note(self, exchanges: Sequence[Exchange], *, own: bool = True) -> None:
        for exchange in exchanges:
            outcome = exchange.outcome
            self._records.append(_record(exchange))
            (self.progress.outcomes if own else self.progress.shared).append(outcome)
            if outcome.throttled:
                self._throttled += 1
            else:
                self._tries += 1
            if outcome.outcome_unknown:
                self._maybe_delivered = True
                self._new_submission = False

    def _note_read(
        self, exchanges: Sequence[Exchange], outcome: Outcome | None, code: str, message: str
    ) -> None:
        """Record a result read under `code` (it does not count toward the backoff)."""
        for exchange in exchanges:
            self.progress.outcomes.append(exchange.outcome)
        for exchange in exchanges[:-1]:
            self._records.append(_record(exchange))
        if exchanges:
            started_at, finished_at = exchanges[-1].started_at, exchanges[-1].finished_at
        else:
            started_at = finished_at = self._clock()
        status = outcome.http_status if outcome is not None else None
        self._records.append(AttemptRecord(started_at, finished_at, status, code, message))

    def _after_failed_call(self, error: AgsError, *, own: bool = True) -> _Verdict:
        if error.exchanges:
            self._note(error.exchanges, own=own)
        else:
            now = self._clock()
            outcome = error.outcome
            (self.progress.outcomes if own else self.progress.shared).append(outcome)
            if outcome.throttled:
                self._throttled += 1
            else:
                self._tries += 1
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
        delay = outcome.retry_after
        if delay is None and outcome.throttled:
            delay = self._policy.backoff(max(1, self._throttled), throttled=True)
        elif delay is None:
            delay = self._policy.backoff(self.job.tries_since_queued + max(1, self._tries))
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
            new_submission=self._opens,
            maybe_delivered=self._maybe_delivered,
            attempts=tuple(self._records),
            tries=self._tries,
            submission_unconfirmed=self._unconfirmed,
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
            new_submission=self._opens,
            maybe_delivered=self._maybe_delivered,
            attempts=tuple(self._records),
            tries=self._tries,
            submission_unconfirmed=self._unconfirmed,
        )
