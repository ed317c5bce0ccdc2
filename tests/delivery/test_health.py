"""The engine's background steps against a database that goes away: which errors mean
"unreachable", how long to wait between tries, and one log line per outage."""

from __future__ import annotations

import errno
import logging

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.delivery.health import DatabaseHealth, is_database_unavailable


def wrapped(error: Exception) -> DBAPIError:
    """What SQLAlchemy raises around a driver error."""
    return DBAPIError("SELECT 1", None, error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        OSError(errno.EPIPE, "Broken pipe"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        OperationalError("SELECT 1", None, Exception("database is locked")),
        wrapped(ConnectionResetError(errno.ECONNRESET, "reset")),
        wrapped(asyncpg.ConnectionDoesNotExistError("closed")),
    ],
)
def test_connection_failures_raw_or_wrapped_mean_the_database_is_unavailable(
    error: Exception,
) -> None:
    assert is_database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", None, Exception("duplicate key")),
        wrapped(ValueError("invalid input syntax")),
        KeyError("status"),
        AttributeError("'NoneType' object has no attribute 'id'"),
    ],
)
def test_other_errors_are_not_an_outage(error: Exception) -> None:
    assert not is_database_unavailable(error)


def test_pauses_grow_with_each_failure_and_stay_capped() -> None:
    health = DatabaseHealth(first=0.2, maximum=5.0, random=lambda: 1.0)
    pauses = [health.failed("writing", TimeoutError()) for _ in range(8)]
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    half = DatabaseHealth(first=0.2, maximum=5.0, random=lambda: 0.0)
    assert half.failed("writing", TimeoutError()) == 0.1  # jitter: between half and all


def test_each_task_starts_small_again_after_it_succeeds() -> None:
    health = DatabaseHealth(first=1.0, maximum=60.0, random=lambda: 1.0)
    for _ in range(3):
        health.failed("claiming", TimeoutError())
    assert health.failed("writing", TimeoutError()) == 1.0  # tasks back off on their own
    health.recovered("claiming")
    assert health.failed("claiming", TimeoutError()) == 1.0


def test_an_outage_is_logged_once_however_many_tries_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="passback.delivery")
    health = DatabaseHealth(first=0.1, maximum=1.0)
    for _ in range(50):
        health.failed("claiming jobs", ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
        health.failed("writing delivery results", TimeoutError())
    assert health.down and health.failed_tries == 100
    health.recovered("writing delivery results")
    health.recovered("claiming jobs")  # already over: nothing more to say
    loud = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert [(record.levelno, record.getMessage().split(" (")[0]) for record in loud] == [
        (logging.WARNING, "database unavailable"),
        (logging.WARNING, "database reachable again after 0.0 s"),
    ]
    assert all(record.exc_info is None for record in loud)
    assert not health.down

    caplog.clear()
    health.failed("claiming jobs", TimeoutError())  # a new outage is news again
    assert [record.getMessage()[:20] for record in caplog.records] == ["database unavailable"]


def test_an_unexpected_error_is_logged_with_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="passback.delivery")
    health = DatabaseHealth(first=0.1, maximum=1.0)
    for _ in range(10):
        try:
            raise KeyError("status")
        except KeyError as error:
            health.failed("writing delivery results", error)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_a_deadlock_is_retried_quietly_and_is_no_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="passback.delivery")
    health = DatabaseHealth(first=0.1, maximum=1.0)
    deadlock = wrapped(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    health.failed("writing delivery results", deadlock)
    health.failed("writing delivery results", deadlock)
    health.recovered("writing delivery results")
    assert not health.down
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]
