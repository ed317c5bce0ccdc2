"""What operators see of a full run (tests/reliability/full_run.py): Prometheus metrics that
moved with it, and JSON log lines that name the request and the job they are about."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.figures import Figures
from tests.reliability.full_run import REQUEST_ID, FullRun, full_run


def samples(run: FullRun) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(run.metrics_text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def run(tool_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    return await full_run(tool_keys_dir, tmp_path_factory.mktemp("full-run"))


@pytest.mark.timeout(240)
async def test_metrics_count_what_the_run_did(run: FullRun, figures: Figures) -> None:
    found = samples(run)
    delivered = value(found, "passback_jobs_finished_total", status="delivered", code="delivered")
    delivered += value(
        found, "passback_jobs_finished_total", status="delivered", code="delivered_earlier"
    )
    assert delivered == run.delivered_jobs
    assert (
        value(found, "passback_jobs_finished_total", status="failed", code="student_not_in_course")
        == 1
    )
    assert value(found, "passback_delivery_seconds_count") == delivered
    assert value(found, "passback_platform_responses_total", outcome="ok") >= delivered
    assert value(found, "passback_platform_responses_total", outcome="throttled") >= 1
    assert value(found, "passback_platform_responses_total", outcome="retry") >= 2  # the 502s
    assert value(found, "passback_throttle_events_total") >= 1
    assert value(found, "passback_token_requests_total", result="ok") == 2  # before, after 401
    assert value(found, "passback_jobs", status="delivered") == run.delivered_jobs
    assert value(found, "passback_jobs", status="pending") == 0
    assert value(found, "passback_oldest_pending_job_age_seconds") == 0
    assert run.room is not None
    queued = value(found, "passback_events_total", decision="queued")
    launches = sum(v for (name, _), v in found.items() if name == "passback_launches_total")
    assert queued == 5
    assert launches >= len(run.room.learners)
    figures.record(
        "moved",
        {
            f"{name}{dict(labels)}": v
            for (name, labels), v in sorted(found.items())
            if v and name.endswith("_total")
        },
    )


@pytest.mark.timeout(240)
async def test_log_lines_name_their_request_and_their_job(run: FullRun) -> None:
    records = run.log_records()
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record

    by_request = [r for r in records if r.get("request_id") == REQUEST_ID]
    assert by_request, "no log line names the caller's X-Request-Id"
    assert all("/v1/submission-events" in r["message"] for r in by_request)

    failed_id = run.failed_job["id"]
    about_job = [r for r in records if r.get("job_id") == failed_id]
    assert any(
        r["level"] == "warning" and r.get("outcome_code") == "student_not_in_course"
        for r in about_job
    ), about_job
    assert run.failed_job["attempts"][-1]["message"]  # the platform's own words, kept
