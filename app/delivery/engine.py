"""The delivery engine: claims due jobs, runs their attempts, writes the results.

One loop claims work lane by lane (one lane per AGS host of a platform registration, the
hosts that share a Canvas rate bucket grouped, each host and each group with its own adaptive
limit on requests in flight: app.delivery.lanes) while an instance-wide limit caps all
requests in flight. Claiming per host lane, as much as the lane can take on, keeps a stalled
host's jobs in the database rather than in memory. Claims are batched, results are written
in batches by a writer task, and leases are renewed while attempts run (and while their
results wait to be written); any instance returns the jobs of a worker whose leases ran out.
Stopping lets running attempts finish for a grace period, then releases the rest.

The database may go away at any moment: every background step (claiming, renewing leases,
writing results) survives any error, logs an outage once (app.delivery.health), waits a little
longer each time, and carries on when the database is back; results wait in memory meanwhile
and are written then.

    engine = DeliveryEngine(context)
    await engine.start()        # in a lifespan; `await engine.stop()` on the way out
    await engine.drain()        # tests: deliver everything due now, then return
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery.attempt import RELEASED, Attempt, PlatformInfo, TracebackOnce
from app.delivery.buckets import Slots
from app.delivery.grouping import BucketMap
from app.delivery.health import DatabaseHealth
from app.delivery.lanes import HostLane
from app.delivery.policy import DeliveryPolicy
from app.delivery.reads import LineItemReads
from app.logs import job_id_var
from app.lti.outcomes import Outcome
from app.store import claims, finishes
from app.store.db import transaction
from app.store.models import JobStatus, PassbackJob, Platform

if TYPE_CHECKING:
    from app.context import AppContext

log = logging.getLogger("passback.delivery")

OWNER_LENGTH = 64
CLAIM_CONFLICT_RETRIES = 3
FINAL_WRITE_SECONDS = 30.0
CLAIMING = "claiming jobs"
WRITING = "writing delivery results"


@dataclass
class EngineStats:
    """Counters since the engine started (metrics, tests, benchmarks)."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    superseded: int = 0
    retried: int = 0
    released: int = 0
    requests: int = 0
    throttled: int = 0
    claim_queries: int = 0
    quarantined: int = 0
    write_batches: int = 0


@dataclass(frozen=True)
class _CachedPlatform:
    platform: PlatformInfo | None
    read_at: float


def _log_outcome(finish: finishes.JobFinish) -> None:
    """One line per attempt, named by the job_id of the context: a failure is a warning, a
    retry is news, a delivery is detail."""
    if finish.status is JobStatus.failed:
        level = logging.WARNING
    else:
        level = logging.DEBUG if finish.is_final else logging.INFO
    if not log.isEnabledFor(level):
        return
    last = finish.attempts[-1] if finish.attempts else None
    log.log(
        level,
        "job %s: %s",
        finish.status.value,
        finish.outcome_code or "-",
        extra={
            "status": finish.status.value,
            "outcome_code": finish.outcome_code,
            "http_status": last.http_status if last else None,
            "platform_message": finish.platform_message,
            "next_attempt_at": None if finish.is_final else finish.next_attempt_at.isoformat(),
        },
    )


def _kept_for_rest(lane: HostLane, finish: finishes.JobFinish, now: datetime) -> finishes.JobFinish:
    """A job that goes on, of a host that rests now: its next try when the rest ends."""
    resting_until = lane.resting_until
    if (
        not finish.is_final
        and resting_until is not None
        and lane.resting(now)
        and finish.next_attempt_at < resting_until
    ):
        return dataclasses.replace(finish, next_attempt_at=resting_until)
    return finish


def owner_id(instance_id: str) -> str:
    """A lease owner unique to one engine, even when one instance runs several."""
    suffix = uuid.uuid4().hex[:8]
    return f"{instance_id[: OWNER_LENGTH - len(suffix) - 1]}/{suffix}"


class DeliveryEngine:
    def __init__(
        self,
        context: AppContext,
        *,
        policy: DeliveryPolicy | None = None,
        owner: str | None = None,
    ) -> None:
        self._context = context
        self.policy = policy or DeliveryPolicy.from_settings(context.settings)
        self.owner = owner or owner_id(context.instance_id)
        self.stats = EngineStats()
        self._lanes: dict[tuple[str, str], HostLane] = {}
        self._maps: dict[str, BucketMap] = {}
        self._shared = Slots(self.policy.concurrency)
        self._platforms: dict[str, _CachedPlatform] = {}
        self._attempts: dict[asyncio.Task[None], Attempt] = {}
        self._results: list[finishes.JobFinish] = []
        self._lanes_of_results: dict[int, HostLane] = {}
        """The lane of each result waiting to be written: a rest that began after the result
        was recorded, and after the rest's jobs were deferred, must still hold it back."""
        self._writing: list[finishes.JobFinish] = []
        self._results_ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._writer_idle = asyncio.Event()
        self._writer_idle.set()
        self._reads = LineItemReads(context.ags, context.clock, keep=self.policy.line_item_keep)
        self._tracebacks = TracebackOnce()
        self._runner: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._grace = self.policy.shutdown_grace
        self._maintained_at = -float("inf")
        self._discovered_at = -float("inf")
        self._deferrals: dict[tuple[str, str], datetime] = {}
        """Lanes whose host began a rest: their pending jobs to defer to its end."""
        self.health = DatabaseHealth(
            first=self.policy.database_retry_first, maximum=self.policy.database_retry_max
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Run in the background until `stop`."""
        if self._runner is not None:
            raise RuntimeError("the engine is already running")
        self._stopping.clear()
        self._runner = asyncio.create_task(self.run(), name=f"delivery-{self.owner}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let attempts finish for `grace` seconds, release the rest, write."""
        self._grace = self.policy.shutdown_grace if grace is None else grace
        self._stopping.set()
        self._changed.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner
            except Exception:
                log.exception("the delivery engine stopped with an error")
        await self._reads.close()

    async def run(self) -> None:
        """Deliver until stopped (the body of `start`; `passback worker` awaits it directly)."""
        self._context.wakeup.subscribe(self.wake)
        self._start_writer()
        try:
            while not self._stopping.is_set():
                try:
                    started = await self._round()
                except Exception as exc:
                    # Keep delivering: a failed round (the database away, a bug) must not stop
                    # the instance's workers; attempts under way go on meanwhile.
                    await self._pause(self.health.failed(CLAIMING, exc))
                    continue
                if started == 0 or self._saturated():
                    await self._wait_for_change(self.policy.poll_interval)
        finally:
            self._context.wakeup.unsubscribe(self.wake)
            await self._finish_in_flight(self._grace)
            await self._stop_writer()
            await self._reads.close()

    async def drain(self) -> None:
        """Deliver everything claimable now, then return once nothing runs and all is written.

        Jobs waiting for a later retry time are left alone (move the clock to make them due).
        Meant for tests and scripts, not alongside `start` on the same engine.
        """
        self._start_writer()
        self._stopping.clear()
        try:
            await self._maintain(force=True)
            while True:
                self._wake_lanes()
                started = await self._round(discover=True)
                if started:
                    continue
                if self._attempts:
                    await self._wait_for_change(self.policy.poll_interval)
                    continue
                await self._flush_written()
                if await self._round(discover=True) == 0 and not self._attempts:
                    return
        finally:
            await self._stop_writer()

    def wake(self) -> None:
        """Look for work now (a job was enqueued)."""
        self._wake_lanes()
        self._discovered_at = -float("inf")
        self._changed.set()

    @property
    def runner(self) -> asyncio.Task[None] | None:
        """The background task `start` made (None when not started)."""
        return self._runner

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    def lane(self, platform_id: str, origin: str | None = None) -> HostLane | None:
        """The lane of a platform's AGS host `origin` (``scheme://host:port``); without an
        origin, the platform's first lane (a one-host registration's only one)."""
        if origin is not None:
            return self._lanes.get((platform_id, origin))
        bucket_map = self._maps.get(platform_id)
        return next(iter(bucket_map.hosts.values()), None) if bucket_map else None

    def bucket_map(self, platform_id: str) -> BucketMap | None:
        """The platform's host lanes and the bucket groups they fall into."""
        return self._maps.get(platform_id)

    # --- claiming -----------------------------------------------------------------------------

    def _busy_jobs(self) -> int:
        """Jobs under way, not counting those waiting in a throttled lane (they would hold up
        the other platforms' lanes)."""
        return sum(1 for attempt in self._attempts.values() if not attempt.progress.holding)

    def _saturated(self) -> bool:
        return self._busy_jobs() >= self.policy.max_jobs

    def _wake_lanes(self) -> None:
        for lane in self._lanes.values():
            lane.dry = False

    async def _round(self, *, discover: bool = False) -> int:
        """Maintain leases when due, find lanes with work, claim for lanes with room."""
        await self._maintain()
        await self._defer_resting()
        loop_now = time.monotonic()
        if discover or loop_now - self._discovered_at >= self.policy.poll_interval:
            await self._discover()
        free = self.policy.max_jobs - self._busy_jobs()
        if free <= 0:
            return 0
        now = self._context.clock()
        wanted: list[tuple[HostLane, int]] = []
        promised: dict[int, int] = {}
        """Jobs this round asks for, per group (the hosts of a group share its room)."""
        # Least busy lanes first, so a lane with a backlog cannot crowd out the others.
        for lane in sorted(self._lanes.values(), key=lambda lane: lane.jobs):
            if lane.dry or lane.resting(now):
                continue
            room = min(lane.free_jobs, lane.group.job_room - promised.get(id(lane.group), 0))
            if room <= 0:
                continue
            # Wait for a useful batch unless the lane is idle: fewer, larger claims.
            if lane.jobs and room < max(1, (lane.jobs + room) // 8):
                continue
            count = min(room, free, self.policy.claim_batch)
            wanted.append((lane, count))
            promised[id(lane.group)] = promised.get(id(lane.group), 0) + count
            free -= count
            if free <= 0:
                break
        if not wanted:
            return 0
        claimed = await self._claim(wanted)
        for job, platform, lane in claimed:
            self._launch(job, platform, lane)
        return len(claimed)

    async def _discover(self) -> None:
        self._discovered_at = time.monotonic()
        async with transaction(self._context.sessions) as session:
            lanes = await claims.lanes_with_pending_jobs(session)
        self.health.recovered(CLAIMING)
        for platform_id, origin in lanes:
            lane = self._lanes.get((platform_id, origin))
            if lane is None:
                bucket_map = self._maps.get(platform_id)
                if bucket_map is None:
                    bucket_map = self._maps[platform_id] = BucketMap(
                        platform_id, self.policy.lanes, self.policy.grouping, self._shared
                    )
                self._lanes[(platform_id, origin)] = bucket_map.host(origin)
            else:
                lane.dry = False
        for bucket_map in self._maps.values():
            bucket_map.forget_stale()
        self.stats.claim_queries += 1

    async def _defer_resting(self) -> None:
        """Move the pending jobs of hosts that began a rest to its end (every instance then
        leaves them alone; the database keeps the rest across a restart)."""
        if not self._deferrals:
            return
        # Taken, not copied: a deferral queued again while this one runs (a batch of results
        # that committed after this UPDATE's snapshot) must stay queued, even for the same end.
        deferrals, self._deferrals = self._deferrals, {}
        now = self._context.clock()
        try:
            async with transaction(self._context.sessions) as session:
                for (platform_id, origin), until in deferrals.items():
                    await claims.defer_lane(
                        session, platform_id=platform_id, origin=origin, until=until, now=now
                    )
        except BaseException:
            for key, until in deferrals.items():
                queued = self._deferrals.get(key)
                self._deferrals[key] = until if queued is None else max(queued, until)
            raise

    def _judge_host(
        self, lane: HostLane, attempt: Attempt, finish: finishes.JobFinish
    ) -> finishes.JobFinish:
        """Tell the lane how its host did on this try; a host that rests keeps this job (if
        it goes on) until the rest ends."""
        now = self._context.clock()
        outcomes = attempt.progress.outcomes + attempt.progress.shared
        rests = lane.rests
        until = lane.try_ended(outcomes, now)
        if until is not None:
            self._deferrals[(lane.platform_id, lane.origin)] = until
            self._context.metrics.host_rested()
        if until is not None or (rests and not lane.rests):
            self._log_host(lane, until, outcomes)
        return _kept_for_rest(lane, finish, now)

    @staticmethod
    def _log_host(lane: HostLane, until: datetime | None, outcomes: list[Outcome]) -> None:
        """A host's rest begins (`until` its end) or ends: news of the host, not of the job
        whose try told it."""
        job = job_id_var.set(None)
        try:
            if until is None:
                log.warning(
                    "AGS host %s answers again; its jobs are delivered",
                    lane.origin,
                    extra={"platform_id": lane.platform_id},
                )
                return
            log.warning(
                "AGS host %s answered nothing usable %d times in a row (last: %s); its jobs "
                "wait in the database until %s, then one job probes it",
                lane.origin,
                lane.failures,
                outcomes[-1].code,
                until.isoformat(timespec="seconds"),
                extra={"platform_id": lane.platform_id, "outcome_code": "host_resting"},
            )
        finally:
            job_id_var.reset(job)

    async def _claim(
        self, wanted: Sequence[tuple[HostLane, int]]
    ) -> list[tuple[PassbackJob, PlatformInfo | None, HostLane]]:
        now = self._context.clock()
        for conflict in range(CLAIM_CONFLICT_RETRIES):
            try:
                quarantined: list[claims.UnreadableJob] = []
                async with transaction(self._context.sessions) as session:
                    claimed: list[tuple[PassbackJob, PlatformInfo | None, HostLane]] = []
                    for lane, count in wanted:
                        claim = await claims.claim_jobs(
                            session,
                            platform_id=lane.platform_id,
                            origin=lane.origin,
                            owner=self.owner,
                            now=now,
                            lease=self.policy.lease,
                            limit=count,
                        )
                        self.stats.claim_queries += 1
                        jobs = claim.jobs
                        quarantined += claim.quarantined
                        lane.dry = len(jobs) + len(claim.quarantined) < count
                        if jobs:
                            platform = await self._platform(session, lane.platform_id)
                            claimed.extend((job, platform, lane) for job in jobs)
                self.health.recovered(CLAIMING)
                for row in quarantined:
                    self._quarantined(row)
                return claimed
            except IntegrityError:
                # Another instance put a job of the same pair in flight between our snapshot
                # and our update; the next try sees it and skips the pair.
                log.info("claim conflict on a pair in flight elsewhere (try %d)", conflict + 1)
        return []

    def _quarantined(self, row: claims.UnreadableJob) -> None:
        self.stats.quarantined += 1
        self._context.metrics.job_quarantined()
        log.error(
            "job %s quarantined: its row cannot be read back (%s); see the runbook",
            row.job_id,
            row.error,
            extra={"job_id": row.job_id, "outcome_code": claims.UNREADABLE_ROW},
        )

    async def _platform(self, session: AsyncSession, platform_id: str) -> PlatformInfo | None:
        """The registration's values, read at most every `platform_refresh` seconds (a copy:
        the row itself expires when the transaction that read it rolls back)."""
        cached = self._platforms.get(platform_id)
        loop_now = time.monotonic()
        if cached is not None and loop_now - cached.read_at < self.policy.platform_refresh:
            return cached.platform
        row = await session.get(Platform, platform_id)
        platform = None if row is None else PlatformInfo.of(row)
        self._platforms[platform_id] = _CachedPlatform(platform, loop_now)
        return platform

    # --- attempts -----------------------------------------------------------------------------

    def _launch(self, job: PassbackJob, platform: PlatformInfo | None, lane: HostLane) -> None:
        attempt = Attempt(
            job,
            platform,
            owner=self.owner,
            ags=self._context.ags,
            reads=self._reads,
            clock=self._context.clock,
            policy=self.policy,
            gate=lane,
            tracebacks=self._tracebacks,
        )
        lane.job_started()
        self.stats.claimed += 1
        task = asyncio.create_task(self._attempt(attempt, lane), name=f"job-{job.id}")
        self._attempts[task] = attempt

    async def _attempt(self, attempt: Attempt, lane: HostLane) -> None:
        job_id_var.set(attempt.job.id)  # this task's log lines name the job
        try:
            finish = await attempt.run()
        except asyncio.CancelledError:
            self._record(attempt.released())
            raise
        except Exception:
            log.exception("delivery of job %s crashed; it will be retried", attempt.job.id)
            tries = attempt.job.tries_since_queued + 1
            finish = attempt.released(delay=self.policy.backoff(tries), code="crashed")
        finally:
            lane.job_ended()
            self._attempts.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._changed.set()
        metrics = self._context.metrics
        for outcome in attempt.progress.outcomes:
            self.stats.requests += 1
            self.stats.throttled += outcome.throttled
            metrics.platform_answered(outcome)
        finish = self._judge_host(lane, attempt, finish)
        if finish.is_final:
            waited = (finish.at - attempt.job.created_at).total_seconds()
            metrics.job_finished(finish.status.value, finish.outcome_code, waited)
        _log_outcome(finish)
        self._lanes_of_results[finish.job_id] = lane
        self._record(finish)

    def _record(self, finish: finishes.JobFinish) -> None:
        status = finish.status
        if status is JobStatus.delivered:
            self.stats.delivered += 1
        elif status is JobStatus.failed:
            self.stats.failed += 1
        elif status is JobStatus.superseded:
            self.stats.superseded += 1
        elif finish.outcome_code == RELEASED:
            self.stats.released += 1
        else:
            self.stats.retried += 1
        self._results.append(finish)
        self._writer_idle.clear()
        self._results_ready.set()

    async def _finish_in_flight(self, grace: float) -> None:
        tasks = list(self._attempts)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` (a database retry), or less if the engine is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_change(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)
        self._changed.clear()

    # --- leases -------------------------------------------------------------------------------

    async def _maintain(self, *, force: bool = False) -> None:
        """Renew our leases and return expired ones (any instance's) to the queue.

        Jobs whose results wait to be written are still ours: their leases are renewed too,
        so a database that was away for longer than a lease finds them still leased to us.
        """
        loop_now = time.monotonic()
        interval = self.policy.lease.total_seconds() / 4
        if not force and loop_now - self._maintained_at < interval:
            return
        now = self._context.clock()
        held = [attempt.job.id for attempt in self._attempts.values()]
        held += [finish.job_id for finish in (*self._results, *self._writing)]
        async with transaction(self._context.sessions) as session:
            await claims.renew_leases(
                session, owner=self.owner, job_ids=held, now=now, lease=self.policy.lease
            )
            released = await claims.release_expired_leases(session, now=now)
        self.health.recovered(CLAIMING)
        self._maintained_at = loop_now
        if released:
            log.warning("returned %d jobs whose worker stopped to the queue", len(released))
            self.wake()

    # --- writing results ----------------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.owner}")

    async def _stop_writer(self) -> None:
        try:
            async with asyncio.timeout(self._grace + FINAL_WRITE_SECONDS):
                await self._flush_written()
        except TimeoutError:
            # The database is away: these jobs stay in flight until their leases run out,
            # then any instance delivers them again (same timestamp, no new submission).
            log.error("could not record %d delivery results before stopping", len(self._results))
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _flush_written(self) -> None:
        """Wait until every recorded result is in the database."""
        while self._results or not self._writer_idle.is_set():
            if self._writer is None or self._writer.done():
                await self._write_pending()
            else:
                self._results_ready.set()
                await self._writer_idle.wait()

    async def _write_loop(self) -> None:
        """Write results as they come; whatever fails, keep them and try again later."""
        while True:
            await self._results_ready.wait()
            await asyncio.sleep(self.policy.flush_delay)
            try:
                await self._write_pending()
            except Exception as exc:
                await asyncio.sleep(self.health.failed(WRITING, exc))
            else:
                self.health.recovered(WRITING)

    async def _write_pending(self) -> None:
        self._results_ready.clear()
        batch, self._results = self._results, []
        if not batch:
            self._writer_idle.set()
            return
        now = self._context.clock()
        lanes = self._lanes_of_results
        batch = [
            _kept_for_rest(lanes[finish.job_id], finish, now) if finish.job_id in lanes else finish
            for finish in batch
        ]
        self._writing = batch
        try:
            async with transaction(self._context.sessions) as session:
                await finishes.finish_jobs(session, batch)
        except BaseException:
            self._results[:0] = batch
            self._results_ready.set()
            raise
        finally:
            self._writing = []
        now = self._context.clock()
        for finish in batch:
            lane = lanes.pop(finish.job_id, None)
            if lane is not None and _kept_for_rest(lane, finish, now) is not finish:
                # A rest began while this batch was written: the rest's deferral may have
                # run before the batch committed and missed these rows (in flight then).
                until = lane.resting_until
                assert until is not None
                self._deferrals[(lane.platform_id, lane.origin)] = until
        self.stats.write_batches += 1
        if not self._results:
            self._writer_idle.set()
        # Finished jobs free their pairs: the next job of a pair may now be claimed.
        self._wake_lanes()
        self._changed.set()
