"""The admission scheduler: the one owner of which stream's frame starts next when the room
for frames in flight, shared by all streams, frees up.

A stream decides only for itself: whether it has a frame waiting that its own bound lets start
(`can_start`). It asks the scheduler to `admit` it, and tells it when a frame is done; the
scheduler starts it at once or queues it, and on each frame done starts the streams that queued
first, through their public `start_waiting_frame()`. It never looks inside a stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar


class Admittable(Hashable, Protocol):
    @property
    def can_start(self) -> bool:
        """Whether a frame is waiting that the stream's own bound lets start."""
        ...

    def start_waiting_frame(self) -> None:
        """Starts the waiting frame in room the scheduler took for it."""
        ...


Stream = TypeVar("Stream", bound=Admittable)


class AdmissionScheduler(Generic[Stream]):
    """The frames in flight across all streams, at most `max_frames_in_flight` at once.

    A frame that finds no room waits in its stream's slot (where a newer frame replaces it,
    as always), and its stream queues here; each frame that finishes hands its room to the
    stream that queued first. So an overloaded server drops stale frames evenly across
    streams instead of growing a queue.
    """

    def __init__(self, max_frames_in_flight: int) -> None:
        self.max_frames_in_flight = max_frames_in_flight
        self.in_flight = 0
        self._queued: deque[Stream] = deque()

    def admit(self, stream: Stream) -> None:
        """Starts the stream's waiting frame now if there is room and nobody queued first;
        else queues the stream."""
        if not stream.can_start:
            return
        if self.in_flight < self.max_frames_in_flight and not self._queued:
            self.in_flight += 1
            stream.start_waiting_frame()
        elif stream not in self._queued:
            self._queued.append(stream)

    def frame_done(self) -> None:
        """A frame left the pipeline: its room goes to the streams that queued first."""
        self.in_flight -= 1
        while self._queued and self.in_flight < self.max_frames_in_flight:
            stream = self._queued.popleft()
            if stream.can_start:  # else it asks again when its own frame is done
                self.in_flight += 1
                stream.start_waiting_frame()

    def forget(self, stream: Stream) -> None:
        """The stream closed: it no longer queues."""
        if stream in self._queued:
            self._queued.remove(stream)
