"""The replica's headroom: whether it can carry another stream without dropping frames.

A count of streams is not capacity: a replica whose engine is already at capacity, or that is
already dropping frames for its callers, drops more for every stream it takes. So the load is
also measured over a short window (`window_s`), from samples taken every `window_s / 8`:

- engine occupancy: the share of the window each model's engine threads were busy (the
  batch runners' `occupied_s`), the busiest model's;
- frames dropped: DROPPED answers over all answers, counted only when the replica dropped
  frames in most of the window's samples, so that one caller's burst of frames (which a
  stream drops on any server) is not taken for a lack of room.

`utilisation` (0..1) is what the autoscaler reads: the most used of the stream count, the
engine's occupancy, and 1 while the replica measures itself full. `refusal()` says which limit
refuses a new stream, or None.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.clock import Clock

FULL_OCCUPANCY = 0.95  # the engine counts as at capacity above this share of the window
MAX_DROPPED_RATIO = 0.02  # a replica that drops more of its frames than this is full...
DROPPING_SAMPLES_RATIO = 0.5  # ...when it dropped frames in more than this share of samples
SAMPLES_PER_WINDOW = 8


class EngineLoad(Protocol):
    @property
    def occupied_s(self) -> float: ...


@dataclass(frozen=True)
class FrameCounts:
    answered: int  # every answer, DROPPED ones included
    dropped: int


@dataclass(frozen=True)
class _Sample:
    at: float
    occupied_s: tuple[float, ...]  # each engine's, in the order given
    frames: FrameCounts


@dataclass(frozen=True)
class Load:
    """The replica's load over the last window."""

    engine_occupancy: float  # 0..1, the busiest engine's
    dropped_ratio: float  # DROPPED answers over all answers
    dropping_samples_ratio: float  # share of samples in which frames were dropped
    window_s: float  # the span measured (shorter than the window at start)

    @property
    def full_because(self) -> str | None:
        """Which measured limit the replica is at, in words; None when it has room."""
        if self.engine_occupancy >= FULL_OCCUPANCY:
            return (
                f"its engine is at capacity (busy {self.engine_occupancy:.0%} of the last "
                f"{self.window_s:.1f} s)"
            )
        if (
            self.dropped_ratio > MAX_DROPPED_RATIO
            and self.dropping_samples_ratio > DROPPING_SAMPLES_RATIO
        ):
            return (
                f"it is dropping frames for its streams ({self.dropped_ratio:.0%} of the "
                f"frames of the last {self.window_s:.1f} s)"
            )
        return None


IDLE = Load(0.0, 0.0, 0.0, 0.0)


class Headroom:
    """The measured load of the replica and the room it has left.

    `sample()` runs on the event loop every `sample_interval_s`; `utilisation` is a float
    that the metrics thread may read at any time.
    """

    def __init__(
        self,
        window_s: float,
        engines: Callable[[], Sequence[EngineLoad]],
        frames: Callable[[], FrameCounts],
        clock: Clock = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.sample_interval_s = window_s / SAMPLES_PER_WINDOW
        self._engines = engines
        self._frames = frames
        self._clock = clock
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES_PER_WINDOW + 1)
        self.load = IDLE
        self.utilisation = 0.0
        self._stream_share = 0.0

    def sample(self) -> Load:
        """Takes a sample, and measures the load over the window that ends with it."""
        engines = tuple(engine.occupied_s for engine in self._engines())
        self._samples.append(_Sample(self._clock(), engines, self._frames()))
        self.load = self._measure()
        self._update_utilisation()
        return self.load

    def streams_changed(self, open_streams: int, max_streams: int) -> None:
        self._stream_share = min(1.0, open_streams / max_streams)
        self._update_utilisation()

    def _update_utilisation(self) -> None:
        full = 1.0 if self.load.full_because else 0.0
        self.utilisation = min(1.0, max(self._stream_share, self.load.engine_occupancy, full))

    def _measure(self) -> Load:
        first, last = self._samples[0], self._samples[-1]
        span_s = last.at - first.at
        if span_s <= 0 or len(first.occupied_s) != len(last.occupied_s):
            return IDLE  # the first sample, or a model loaded since
        occupancy = max(
            (end - start for start, end in zip(first.occupied_s, last.occupied_s, strict=True)),
            default=0.0,
        )
        answered = last.frames.answered - first.frames.answered
        dropped = last.frames.dropped - first.frames.dropped
        samples = list(self._samples)
        intervals = len(samples) - 1
        dropping = sum(
            1
            for before, after in itertools.pairwise(samples)
            if after.frames.dropped > before.frames.dropped
        )
        return Load(
            engine_occupancy=min(1.0, occupancy / span_s),
            dropped_ratio=dropped / answered if answered else 0.0,
            dropping_samples_ratio=dropping / intervals,
            window_s=span_s,
        )
