"""What the servicer hands a stream for each frame, and the one answer it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.errors import FrameError
from service.frames.requests import SegmentedFrame


class FrameOutcome(StrEnum):
    OK = "ok"
    DROPPED = "dropped"
    ERROR = "error"


@dataclass(frozen=True)
class IncomingFrame:
    frame_id: int
    capture_timestamp_us: int
    jpeg: bytes


@dataclass(frozen=True)
class FrameAnswer:
    frame_id: int
    capture_timestamp_us: int
    outcome: FrameOutcome
    segmented: SegmentedFrame | None = None  # set when OK
    error: FrameError | None = None  # set when ERROR
    # Waiting for room: behind the stream's own frames in flight, then for the shared room.
    admission_wait_s: float = 0.0

    @property
    def total_s(self) -> float | None:
        """Server time from the frame's arrival to its answer, for OK frames."""
        if self.segmented is None:
            return None
        return self.admission_wait_s + self.segmented.timings.total_s
