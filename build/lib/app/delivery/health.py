"""How the engine's background tasks ride out a database that is away.

Every task of the engine (claiming, renewing leases, writing results) keeps running whatever
the database does: a failed step is logged, waited out with a growing pause, and tried again.
An outage is logged once when it starts (a WARNING naming the error, no traceback) and once
when it ends, however many tries of however many tasks fail in between; an error that does
not look like an outage (a bug, a constraint) gets its traceback, once per kind of error until
the steps succeed again.

    health = DatabaseHealth(policy)
    try:
        await step()
    except Exception as exc:
        await asyncio.sleep(health.failed("writing results", exc))
    else:
        health.recovered("writing results")
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa

log = logging.getLogger("passback.delivery")

_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionResetError, ConnectionRefusedError, a socket closed under us
    TimeoutError,  # asyncpg's connect and statement timeouts, asyncio.timeout
    sa.OperationalError,  # SQLite's "database is locked", a wrapped server going away
    sa.InterfaceError,
    sa.TimeoutError,  # no pooled connection in time
    sa.DisconnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)


class DatabaseUnavailable(Exception):
    """The kind of every error that means the database cannot be reached (for the log)."""


class TransactionConflict(Exception):
    """The kind of every error that means "try the transaction again" (a deadlock or a
    serialization failure: PostgreSQL rolled one transaction back)."""


_CONFLICTS: tuple[type[BaseException], ...] = (asyncpg.exceptions.TransactionRollbackError,)


def _causes(error: BaseException) -> list[BaseException]:
    """The error, and what it wraps (SQLAlchemy's `orig`, or the cause), innermost last."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        orig = current.orig if isinstance(current, sa.DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def is_transaction_conflict(error: BaseException) -> bool:
    return any(isinstance(cause, _CONFLICTS) for cause in _causes(error))


def is_database_unavailable(error: BaseException) -> bool:
    """Does this error mean the database cannot be reached (rather than a bug)?

    asyncpg's errors reach us raw or wrapped in SQLAlchemy's, so the causes are looked at too.
    """
    return any(
        isinstance(cause, _UNREACHABLE)
        or (isinstance(cause, sa.DBAPIError) and cause.connection_invalidated)
        for cause in _causes(error)
    )


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text and text[0] else type(error).__name__


class DatabaseHealth:
    """Failures of the engine's database steps: pauses between tries, and the outage's log.

    `first` and `maximum` bound the pause (seconds) after consecutive failures of one task;
    it doubles per failure, with jitter (`random`, replaceable in tests).
    """

    def __init__(
        self,
        *,
        first: float,
        maximum: float,
        random: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first = first
        self._maximum = maximum
        self._random = random
        self._monotonic = monotonic
        self._failures: dict[str, int] = {}
        self._down_since: float | None = None
        self._failed_tries = 0
        self._logged: set[type[BaseException]] = set()

    @property
    def down(self) -> bool:
        """An outage is under way (a step failed and none has succeeded since)."""
        return self._down_since is not None

    @property
    def failed_tries(self) -> int:
        """Tries failed for want of the database in the current outage (0 when none)."""
        return self._failed_tries

    def failed(self, task: str, error: BaseException) -> float:
        """Record a failed step of `task`; returns the seconds to wait before trying again."""
        failures = self._failures.get(task, 0) + 1
        self._failures[task] = failures
        # One line per outage, and a traceback per kind of unexpected error.
        kind: type[BaseException] = type(error)
        if is_database_unavailable(error):
            kind = DatabaseUnavailable
            self._failed_tries += 1
            if self._down_since is None:
                self._down_since = self._monotonic()
        elif is_transaction_conflict(error):
            kind = TransactionConflict
        if kind in self._logged:
            log.debug("%s failed again (%s)", task, describe(error))
        elif kind is TransactionConflict:
            log.info("%s: transaction rolled back (%s); trying again", task, describe(error))
        elif kind is DatabaseUnavailable:
            log.warning(
                "database unavailable (%s: %s); delivery results are kept and written when it "
                "is back",
                task,
                describe(error),
            )
        else:
            log.error("%s failed; trying again", task, exc_info=error)
        self._logged.add(kind)
        return self.pause(failures)

    def recovered(self, task: str) -> None:
        """A step of `task` succeeded: its pauses start small again; an outage ends."""
        if self._failures.pop(task, None) is not None:
            self._logged.clear()
        if self._down_since is None:
            return
        log.warning(
            "database reachable again after %.1f s (%d failed tries)",
            self._monotonic() - self._down_since,
            self._failed_tries,
        )
        self._down_since = None
        self._failed_tries = 0
        self._logged.clear()

    def pause(self, failures: int) -> float:
        """Between half and all of first × 2^(failures-1), capped at `maximum`."""
        full = min(self._maximum, self._first * 2.0 ** max(0, failures - 1))
        return full / 2 + self._random() * full / 2
