"""A doorbell for the delivery workers of this instance.

Code that enqueues a job calls `notify()` after its transaction commits; every engine running in
the instance then looks for work at once instead of at its next poll. Without a ring, workers
still find the job within `settings.worker_poll_interval`.
"""

from __future__ import annotations

from collections.abc import Callable


class Wakeup:
    def __init__(self) -> None:
        self._listeners: set[Callable[[], None]] = set()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.add(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.discard(listener)

    def notify(self) -> None:
        for listener in list(self._listeners):
            listener()
