"""The room for frames in flight across all streams, shared out fairly.

The budget only counts and keeps a queue in arrival order: it knows nothing of what it counts
for. The streams take room, queue for it, and on each frame that finishes give it back and
start the streams that queued first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Waiter = TypeVar("Waiter", bound=Hashable)


class FrameBudget(Generic[Waiter]):
    """The frames in flight across all streams, at most `max_frames_in_flight` at once.

    A frame that finds no room waits in its stream's slot (where a newer frame replaces it,
    as always), and its stream queues here; each frame that finishes hands its room to the
    stream that queued first. So an overloaded server drops stale frames evenly across
    streams instead of growing a queue.
    """

    def __init__(self, max_frames_in_flight: int) -> None:
        self.max_frames_in_flight = max_frames_in_flight
        self.in_flight = 0
        self._queued: deque[Waiter] = deque()

    def try_take(self) -> bool:
        """Takes room for one frame, unless there is none or others queued for it first."""
        if self.in_flight < self.max_frames_in_flight and not self._queued:
            self.in_flight += 1
            return True
        return False

    def queue(self, waiter: Waiter) -> None:
        if waiter not in self._queued:
            self._queued.append(waiter)

    def forget(self, waiter: Waiter) -> None:
        if waiter in self._queued:
            self._queued.remove(waiter)

    def give_back(self) -> None:
        self.in_flight -= 1

    def take_for_next_queued(self) -> Waiter | None:
        """Takes room for the waiter that queued first and returns it; None when there is no
        room or nobody queued. A waiter that cannot use the room gives it back."""
        if not self._queued or self.in_flight >= self.max_frames_in_flight:
            return None
        self.in_flight += 1
        return self._queued.popleft()
