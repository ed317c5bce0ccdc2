"""The outbox's workers: claim due passback jobs, deliver them over AGS, record the outcome.

Public entry points: `DeliveryEngine` (start/stop in a lifespan, `drain()` in tests),
`DeliveryPolicy`, and `wake_workers(context)` to ring this instance's workers after enqueueing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.delivery.engine import DeliveryEngine, EngineStats
from app.delivery.policy import DeliveryPolicy, GroupingPolicy, LanePolicy

if TYPE_CHECKING:
    from app.context import AppContext

__all__ = [
    "DeliveryEngine",
    "DeliveryPolicy",
    "EngineStats",
    "GroupingPolicy",
    "LanePolicy",
    "wake_workers",
]


def wake_workers(context: AppContext) -> None:
    """Tell this instance's delivery workers a job was enqueued (call after commit)."""
    context.wakeup.notify()
