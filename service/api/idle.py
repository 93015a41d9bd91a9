"""Cuts off a stream that makes no progress for a while: one timer per stream, moved lazily.

Arming and disarming a timeout around every message (`asyncio.timeout`) pushes a timer onto
the event loop's heap per frame; here each message only notes the time, and the one timer,
when it fires, either finds recent progress and moves itself on, or cancels the task.
"""

from __future__ import annotations

import asyncio


class IdleWatch:
    """Cancels the task that creates it once `progress()` was not called for `timeout_s`;
    `expired` then tells that cancellation from any other."""

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.timeout_s = timeout_s
        self.expired = False
        self._last_progress = self._loop.time()
        self._timer = self._loop.call_at(self._last_progress + timeout_s, self._check)

    def progress(self) -> None:
        self._last_progress = self._loop.time()

    def close(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        due = self._last_progress + self.timeout_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
        elif self._task is not None:
            self.expired = True
            self._task.cancel()
