"""Whether a model's engine is failing: its batches' failures counted against their successes.

A bad frame fails that frame alone (a FrameError in the batch's results) and says nothing about
the engine. A batch whose `run_batch` raises (an EngineFailure from a broken device, or any
other exception) is the engine's failure. One failed batch is a blip; an engine that has
failed every batch for `failing_after_s` is failing, and the replica should stop taking calls
until a batch succeeds again. Only a run of failures counts: one that comes longer than
`failing_after_s` after the last (no batch ran between: nothing was known) starts a new run,
so that two blips far apart are not taken for an engine that failed all along. An
EngineFailure that is not recoverable is fatal at once: the process should end, so that it is
restarted.

Time comes from an injected clock, so that the policy is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.clock import Clock
from service.errors import EngineFailure

# The listener hears each change of state: True when the engine turns failing, False when it
# recovers.
Listener = Callable[[bool], None]


class EngineHealth:
    """One engine's health, from the outcome of each batch it ran."""

    def __init__(self, failing_after_s: float, clock: Clock = time.monotonic) -> None:
        self.failing_after_s = failing_after_s
        self._clock = clock
        self._failing_since: float | None = None  # the first failure of the current run
        self._last_failure_at = 0.0
        self.failing = False
        self.batches_failed = 0
        self.batches_succeeded = 0
        self.last_failure = ""  # what the last failed batch raised, for logs and statuses
        self.fatal: BaseException | None = None  # an EngineFailure that cannot recover
        self._listeners: list[Listener] = []
        self._fatal_listeners: list[Callable[[BaseException], None]] = []

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_fatal(self, listener: Callable[[BaseException], None]) -> None:
        self._fatal_listeners.append(listener)

    @property
    def failing_for_s(self) -> float:
        """How long every batch has failed; 0 after a success."""
        return 0.0 if self._failing_since is None else self._clock() - self._failing_since

    def batch_succeeded(self) -> None:
        self.batches_succeeded += 1
        self._failing_since = None
        if self.failing:
            self.failing = False
            self._tell(False)

    def batch_failed(self, error: BaseException) -> None:
        self.batches_failed += 1
        self.last_failure = f"{type(error).__name__}: {error}"
        if isinstance(error, EngineFailure) and not error.recoverable and self.fatal is None:
            self.fatal = error
            for listener in self._fatal_listeners:
                listener(error)
        now = self._clock()
        if self._failing_since is None or now - self._last_failure_at > self.failing_after_s:
            self._failing_since = now
        self._last_failure_at = now
        if not self.failing and now - self._failing_since >= self.failing_after_s:
            self.failing = True
            self._tell(True)

    def _tell(self, failing: bool) -> None:
        for listener in self._listeners:
            listener(failing)
