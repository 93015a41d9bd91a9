"""When one stream's next frame is due: what the batcher knows of the frames still to come."""

from __future__ import annotations


class StreamCadence:
    """When one stream's next frame is due, from the gaps between its frames so far, so that
    the batcher knows whether waiting can bring it into a batch."""

    _SMOOTHING = 0.2  # weight of the newest gap in the running estimate
    _LONGEST_GAP_S = 1.0  # a longer gap is a pause, not the stream's frame rate

    def __init__(self) -> None:
        self._last_at: float | None = None
        self._interval_s: float | None = None

    def frame_started(self, now: float) -> None:
        """Takes the time one of the stream's frames starts on its way to a batch."""
        if self._last_at is not None and now - self._last_at < self._LONGEST_GAP_S:
            gap = now - self._last_at
            if self._interval_s is None:
                self._interval_s = gap
            else:
                self._interval_s += self._SMOOTHING * (gap - self._interval_s)
        self._last_at = now

    @property
    def next_frame_due_at(self) -> float | None:
        if self._last_at is None or self._interval_s is None:
            return None
        return self._last_at + self._interval_s
