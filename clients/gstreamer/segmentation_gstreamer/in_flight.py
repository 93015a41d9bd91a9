"""The frames and events between the element's two threads, in arrival order.

The streaming thread adds frames (waiting only while `max_frames` are in flight) and the events
between them; the stream's thread fills in each frame's answer (the frame is the context it was
sent with, so no map of frames is kept here: the client library keeps the one of unanswered
frames); the output thread takes the oldest item once it is ready: an event at once, a frame
once answered. So buffers leave in order, whatever order work finishes in, and an event never
overtakes the frames before it."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from segmentation.v1 import segmentation_pb2 as pb


@dataclass
class PendingFrame:
    frame_id: int
    buffer: Any  # the input Gst.Buffer, held until the frame leaves
    layout: Any  # its frames.Layout, and the output's
    out_layout: Any
    sent_at: float = field(default_factory=time.monotonic)
    answer: pb.StreamSegmentResponse | None = None


class InFlight:
    def __init__(self, max_frames: int) -> None:
        self._max_frames = max_frames
        self._changed = threading.Condition()
        self._items: deque[PendingFrame | object] = deque()
        self._frames = 0  # frames among the items
        self._flushing = False
        self.failure: Exception | None = None  # the stream failed: nothing more leaves

    def add_frame(self, frame: PendingFrame) -> bool:
        """Waits for room; False when flushing or failed (the frame was not taken)."""
        with self._changed:
            while self._frames >= self._max_frames and self._open():
                self._changed.wait()
            if not self._open():
                return False
            self._items.append(frame)
            self._frames += 1
            return True

    def add_event(self, event: object) -> None:
        with self._changed:
            self._items.append(event)
            self._changed.notify_all()

    def answer(self, frame: object, response: pb.StreamSegmentResponse) -> None:
        """Answers of frames discarded by a flush fill in a frame no one takes any more."""
        assert isinstance(frame, PendingFrame)
        with self._changed:
            frame.answer = response
            self._changed.notify_all()

    def take(self) -> PendingFrame | object | None:
        """The oldest item once ready; None when flushing or failed."""
        with self._changed:
            while self._open() and not (self._items and self._ready(self._items[0])):
                self._changed.wait()
            if not self._open():
                return None
            item = self._items.popleft()
            if isinstance(item, PendingFrame):
                self._frames -= 1
                self._changed.notify_all()  # room for the streaming thread
            return item

    def set_flushing(self, flushing: bool) -> None:
        """Flushing discards everything held and wakes both threads."""
        with self._changed:
            self._flushing = flushing
            self._items.clear()
            self._frames = 0
            self._changed.notify_all()

    def fail(self, failure: Exception) -> None:
        with self._changed:
            self.failure = failure
            self._changed.notify_all()

    def _open(self) -> bool:
        return not self._flushing and self.failure is None

    @staticmethod
    def _ready(item: object) -> bool:
        return not isinstance(item, PendingFrame) or item.answer is not None
