"""Every platform answer maps to one action, one stable code and the platform's own words."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from app.lti.outcomes import (
    FAILURE_REASONS,
    TEACHER_TEXTS,
    Action,
    FailureCode,
    RetryCode,
    classify_ags_answer,
    classify_token_answer,
    classify_transport_error,
    platform_message,
    retry_after_seconds,
    teacher_text,
)

THROTTLED = "403 Forbidden (Rate Limit Exceeded)\n"


def shape_a(message: str, kind: str = "unprocessable_entity") -> str:
    return json.dumps({"errors": {"type": kind, "message": message}})


def shape_b(message: str) -> str:
    return json.dumps({"errors": [{"message": message}]})


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


def test_a_2xx_is_delivered_and_reports_the_remaining_rate_budget() -> None:
    outcome = classify_ags_answer(200, headers(X_Rate_Limit_Remaining="512.5"), "{}")
    assert outcome.action is Action.delivered
    assert outcome.rate_limit_remaining == 512.5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status: int) -> None:
    outcome = classify_ags_answer(status, headers(), shape_b("An error occurred."))
    assert outcome.action is Action.retry
    assert outcome.code == RetryCode.platform_error
    assert not outcome.outcome_unknown
    assert outcome.message == "An error occurred."


def test_a_gateway_timeout_is_retried_as_of_unknown_outcome() -> None:
    outcome = classify_ags_answer(504, headers(), "")
    assert outcome.action is Action.retry
    assert outcome.outcome_unknown


def test_429_is_retried_after_the_time_the_platform_asks_for() -> None:
    outcome = classify_ags_answer(429, headers(Retry_After="7"), shape_b("Too Many Requests"))
    assert outcome.action is Action.retry
    assert outcome.code == RetryCode.rate_limited
    assert outcome.retry_after == 7.0
    assert outcome.throttled


def test_canvas_throttling_403_is_retried() -> None:
    outcome = classify_ags_answer(403, headers(X_Rate_Limit_Remaining="0.0"), THROTTLED)
    assert outcome.action is Action.retry
    assert outcome.code == RetryCode.throttled
    assert outcome.throttled
    assert outcome.rate_limit_remaining == 0.0
    assert outcome.message == THROTTLED.strip()


def test_a_403_that_is_not_throttling_fails() -> None:
    outcome = classify_ags_answer(403, headers(), shape_b("Forbidden"))
    assert outcome.action is Action.failed
    assert outcome.code == FailureCode.platform_rejected
    d2l = classify_ags_answer(403, headers(), "User in requested score is not enrolled")
    assert d2l.code == FailureCode.student_not_in_course


@pytest.mark.parametrize(
    "message",
    [
        "Access token expired",
        "Invalid access token format",
        "Access token invalid - signature likely incorrect",
        "Invalid access token field/s: the 'aud' is invalid",
        "Missing access token",
    ],
)
def test_generic_token_401s_ask_for_a_fresh_token(message: str) -> None:
    outcome = classify_ags_answer(401, headers(), shape_a(message, "unauthorized"))
    assert outcome.action is Action.refresh_token
    assert outcome.message == message


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Unknown or inactive Developer Key", FailureCode.developer_key_inactive),
        ("Invalid Developer Key", FailureCode.developer_key_not_enabled),
        (
            "Access Token not linked to a Tool associated with this Context",
            FailureCode.tool_not_installed,
        ),
        ("Insufficient permissions", FailureCode.scope_not_granted),
    ],
)
def test_401s_naming_a_registration_problem_fail_with_its_code(
    message: str, code: FailureCode
) -> None:
    outcome = classify_ags_answer(401, headers(), shape_a(message, "unauthorized"))
    assert outcome.action is Action.failed
    assert outcome.code == code
    assert outcome.message == message


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (404, shape_b("The specified resource does not exist."), FailureCode.assignment_not_linked),
        (404, "", FailureCode.assignment_not_linked),
        (404, shape_a("Context is deleted or not found", "not_found"), FailureCode.course_deleted),
        (
            422,
            shape_a(
                "This course has concluded. "
                "AGS requests will no longer be accepted for this course."
            ),
            FailureCode.course_concluded,
        ),
        (
            422,
            shape_a("User not found in course or is not a student"),
            FailureCode.student_not_in_course,
        ),
        (
            412,
            shape_a("The specified LTI link ID is not associated with the line item.", "x"),
            FailureCode.assignment_not_linked,
        ),
        (
            422,
            shape_a("ScoreMaximum must be greater than or equal to 0"),
            FailureCode.platform_rejected,
        ),
    ],
)
def test_permanent_refusals_fail_with_the_spec_code(status: int, body: str, code: str) -> None:
    outcome = classify_ags_answer(status, headers(), body)
    assert outcome.action is Action.failed
    assert outcome.code == code
    assert outcome.http_status == status


def test_a_stale_timestamp_means_a_newer_grade_is_there() -> None:
    message = (
        "Provided timestamp of 2026-01-01T00:00:00.000+00:00 before last updated timestamp "
        "of 2026-01-02T00:00:00.000+00:00"
    )
    outcome = classify_ags_answer(400, headers(), shape_a(message, "bad_request"))
    assert outcome.action is Action.superseded
    assert outcome.message == message


def test_exhausted_attempts_ask_for_a_resend_without_a_new_submission() -> None:
    message = "The maximum number of allowed attempts has been reached for this submission"
    outcome = classify_ags_answer(422, headers(), shape_a(message))
    assert outcome.action is Action.resend_without_new_submission


def test_already_there_answers_mean_delivered_only_after_an_attempt_of_unknown_outcome() -> None:
    moodle = json.dumps({"error": "Refusing score with an earlier timestamp"})
    edx = json.dumps({"timestamp": ["Score already exists for the provided timestamp"]})
    edx_text = "Score already exists for the provided timestamp"
    assert (
        classify_ags_answer(409, headers(), moodle, after_unknown=True).action is Action.delivered
    )
    assert classify_ags_answer(409, headers(), moodle).action is Action.superseded
    assert classify_ags_answer(400, headers(), edx, after_unknown=True).action is Action.delivered
    assert classify_ags_answer(400, headers(), edx_text).action is Action.failed


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, "invalid_client", FailureCode.developer_key_inactive),
        (400, "invalid_scope", FailureCode.scope_not_granted),
        (400, "invalid_request", FailureCode.client_assertion_rejected),
        (400, "unsupported_grant_type", FailureCode.client_assertion_rejected),
    ],
)
def test_token_endpoint_errors_keep_their_words(status: int, error: str, code: str) -> None:
    body = json.dumps({"error": error, "error_description": "the 'aud' is invalid"})
    outcome = classify_token_answer(status, headers(), body)
    assert outcome.action is Action.failed
    assert outcome.code == code
    assert outcome.message == f"{error}: the 'aud' is invalid"


def test_token_endpoint_outages_and_throttling_are_retried() -> None:
    assert classify_token_answer(502, headers(), "bad gateway").action is Action.retry
    throttled = classify_token_answer(403, headers(), THROTTLED)
    assert throttled.action is Action.retry and throttled.throttled


def test_transport_errors_are_retried_and_only_post_send_ones_are_of_unknown_outcome() -> None:
    request = httpx.Request("POST", "https://canvas.example/scores")
    refused = classify_transport_error(
        httpx.ConnectError("refused", request=request), request_sent=True
    )
    assert refused.action is Action.retry and not refused.outcome_unknown
    timed_out = classify_transport_error(
        httpx.ReadTimeout("timed out", request=request), request_sent=True
    )
    assert timed_out.code == RetryCode.timeout and timed_out.outcome_unknown
    reset = classify_transport_error(
        httpx.RemoteProtocolError("peer closed", request=request), request_sent=True
    )
    assert reset.code == RetryCode.connection_error and reset.outcome_unknown


def test_messages_are_read_from_every_canvas_error_shape() -> None:
    assert platform_message(shape_a("A")) == "A"
    assert platform_message(shape_b("B")) == "B"
    assert platform_message(json.dumps({"error": "D"})) == "D"
    assert platform_message("<html>oops</html>") == "<html>oops</html>"
    assert platform_message("") is None


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 20, 14, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Fri, 20 Nov 2026 14:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("999999") == 3600.0


def test_every_spec_failure_code_has_a_teacher_explanation_and_fix() -> None:
    spec_codes = {
        "assignment_not_linked",
        "course_deleted",
        "course_concluded",
        "student_not_in_course",
        "developer_key_inactive",
        "developer_key_not_enabled",
        "tool_not_installed",
        "scope_not_granted",
        "client_assertion_rejected",
        "platform_unavailable",
    }
    assert spec_codes <= set(TEACHER_TEXTS)
    assert set(TEACHER_TEXTS) == {code.value for code in FAILURE_REASONS}
    for reason in FAILURE_REASONS.values():
        assert reason.explanation and reason.fix
    assert teacher_text("course_concluded") is not None
    assert "Reopen" in (teacher_text("course_concluded") or "")
    assert teacher_text("delivered") is None
