"""How busy a model's engine threads are: the batches running on them now, and the seconds
they were fully busy so far (the time integral of the batches in flight over the most that
run at once, so two half-busy threads count as one second per second).

The batch runner changes the count as batches start and end; the replica's measured load
(`streams.headroom`) reads `occupied_s`; the engine probe waits for `idle`, so that it has the
engine to itself. Time comes from an injected clock.
"""

from __future__ import annotations

import asyncio

from service.clock import Clock


class EngineOccupancy:
    """The batches in flight on `threads` engine threads, and how long they kept them busy."""

    def __init__(self, threads: int, clock: Clock) -> None:
        self.threads = threads
        self.in_flight = 0
        self._clock = clock
        self._occupied_s = 0.0
        self._changed_at = clock()
        self.idle = asyncio.Event()  # set while no batch runs
        self.idle.set()

    @property
    def occupied_s(self) -> float:
        return self._occupied_s + self._since_change()

    def _since_change(self) -> float:
        return (self._clock() - self._changed_at) * self.in_flight / self.threads

    def change(self, by: int) -> None:
        """`by` batches started (positive) or ended (negative)."""
        self._occupied_s += self._since_change()
        self._changed_at = self._clock()
        self.in_flight += by
        if self.in_flight:
            self.idle.clear()
        else:
            self.idle.set()
