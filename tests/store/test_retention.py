"""Retention: `passback prune` removes finished manual jobs, old events and emptied batches,
and never a pending or in-flight job, an automatic job, or anything younger than the cutoff."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from app.context import AppContext
from app.store.models import (
    Batch,
    JobAttempt,
    JobKind,
    JobStatus,
    PassbackJob,
    SubmissionEvent,
)
from app.store.platforms import new_platform
from app.store.retention import prune
from tests.support.databases import empty_all_tables
from tests.support.processes import PASSBACK

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=200)
RECENT = NOW - timedelta(days=10)


def _job(
    number: int, kind: JobKind, status: JobStatus, finished: datetime | None, **more: object
) -> PassbackJob:
    created = (finished or NOW) - timedelta(minutes=1)
    return PassbackJob(
        kind=kind,
        status=status,
        pair_key=f"pair-{number}",
        platform_id="p-retention",
        formative_id="fm-1",
        student_id=f"s-{number}",
        class_id="c-1",
        lineitem_url="https://canvas.test/api/lti/courses/1/line_items/1",
        lti_user_id=f"u-{number}",
        score=Decimal(7),
        max_score=Decimal(10),
        score_timestamp=created,
        next_attempt_at=created,
        deadline_at=created + timedelta(days=1),
        created_at=created,
        updated_at=finished or created,
        finished_at=finished,
        **more,
    )


def _event(number: int, received: datetime) -> SubmissionEvent:
    return SubmissionEvent(
        event_id=f"evt-{number}",
        request_digest="0" * 64,
        formative_id="fm-1",
        student_id=f"s-{number}",
        type="submitted",
        occurred_at=received,
        received_at=received,
        decision="not_eligible",
        response_body="{}",
    )


def _batch(batch_id: str, created: datetime) -> Batch:
    return Batch(
        id=batch_id,
        formative_id="fm-1",
        mode="grades",
        sent_by_teacher_id="t-1",
        sent_via="teacher_token",
        request_digest="0" * 64,
        created_at=created,
    )


async def _seed(context: AppContext) -> dict[str, int]:
    """Jobs that must go and jobs that must stay; returns the ids of the ones that stay."""
    async with context.sessions() as session:
        session.add(
            new_platform(
                NOW,
                id="p-retention",
                issuer="https://canvas.test",
                client_id="1",
                deployment_ids=["1:a"],
                token_url="https://canvas.test/login/oauth2/token",
                jwks_url="https://canvas.test/jwks",
                allowed_hosts=["canvas.test"],
            )
        )
        session.add_all(
            [_batch("b-old-empty", OLD), _batch("b-old-kept", OLD), _batch("b-new", RECENT)]
        )
        await session.flush()
        stay = {
            "pending_old": _job(1, JobKind.manual, JobStatus.pending, None),
            "in_flight_old": _job(2, JobKind.manual, JobStatus.in_flight, None),
            "automatic_old": _job(3, JobKind.automatic, JobStatus.delivered, OLD),
            "delivered_recent": _job(
                4, JobKind.manual, JobStatus.delivered, RECENT, batch_id="b-old-kept"
            ),
        }
        stay["pending_old"].created_at = OLD
        stay["in_flight_old"].created_at = OLD
        go = [
            _job(10 + n, JobKind.manual, status, OLD, batch_id="b-old-empty")
            for n, status in enumerate(
                [JobStatus.delivered, JobStatus.superseded, JobStatus.failed] * 3
            )
        ]
        session.add_all([*stay.values(), *go])
        await session.flush()
        for job in [*stay.values(), *go]:
            session.add(
                JobAttempt(
                    job_id=job.id,
                    started_at=OLD,
                    finished_at=OLD,
                    http_status=200,
                    outcome="delivered",
                )
            )
        session.add_all([_event(n, OLD) for n in range(7)])
        session.add_all([_event(100 + n, RECENT) for n in range(2)])
        await session.commit()
        return {name: job.id for name, job in stay.items()}


async def test_prune_removes_finished_manual_jobs_old_events_and_emptied_batches_only(
    context: AppContext,
) -> None:
    await empty_all_tables(context.engine)
    stay = await _seed(context)
    pruned = await prune(context.sessions, older_than=NOW - timedelta(days=180), batch_size=4)
    assert (pruned.jobs, pruned.attempts, pruned.events, pruned.batches) == (9, 9, 7, 1)
    async with context.sessions() as session:
        job_ids = set(await session.scalars(select(PassbackJob.id)))
        assert job_ids == set(stay.values())
        attempts = await session.scalar(select(func.count()).select_from(JobAttempt))
        assert attempts == len(stay)
        events = set(await session.scalars(select(SubmissionEvent.event_id)))
        assert events == {"evt-100", "evt-101"}
        batches = set(await session.scalars(select(Batch.id)))
        assert batches == {"b-old-kept", "b-new"}
    again = await prune(context.sessions, older_than=NOW - timedelta(days=180))
    assert (again.jobs, again.events, again.batches) == (0, 0, 0)
    await empty_all_tables(context.engine)


async def test_passback_prune_keeps_what_is_younger_than_the_days_given(
    context: AppContext, tmp_path: Path
) -> None:
    await empty_all_tables(context.engine)
    await _seed(context)
    env = {
        "PASSBACK_DATABASE_URL": context.settings.database_url,
        "PATH": "/usr/bin:/bin",
    }
    days = (datetime.now(UTC) - OLD).days + 30  # everything seeded is younger than that
    result = subprocess.run(
        [str(PASSBACK), "prune", "--older-than", str(days)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0 jobs" in result.stdout
    result = subprocess.run(
        [str(PASSBACK), "prune"],  # the default: PASSBACK_RETENTION_DAYS
        cwd=tmp_path,
        env={**env, "PASSBACK_RETENTION_DAYS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # 24+ days old is past one day: only pending, in-flight and automatic jobs remain.
    assert "10 jobs (10 attempts), 9 events, 3 batches" in result.stdout, result.stdout
    async with context.sessions() as session:
        left = sorted(await session.scalars(select(PassbackJob.status)))
    assert left == ["delivered", "in_flight", "pending"]  # the automatic one is delivered
    await empty_all_tables(context.engine)
