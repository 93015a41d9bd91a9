"""The recent answers of one stream, for its per-stream metrics series."""

from __future__ import annotations

from collections import deque

import numpy as np

from service.clock import Clock


class RecentStreamFigures:
    """Recent OK answers of one stream, for its per-stream metrics.

    Written on the event loop, read by the metrics thread: readers take a snapshot.
    """

    WINDOW_S = 5.0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._opened_at = clock()
        self._recent: deque[tuple[float, float]] = deque()  # (answered at, latency)

    def record_ok(self, latency_s: float) -> None:
        now = self._clock()
        self._recent.append((now, latency_s))
        while self._recent and self._recent[0][0] < now - self.WINDOW_S:
            self._recent.popleft()

    def frames_per_second(self) -> float:
        now = self._clock()
        answered = [t for t, _ in list(self._recent) if t >= now - self.WINDOW_S]
        span = min(self.WINDOW_S, now - self._opened_at)
        return len(answered) / span if span > 0 else 0.0

    def latency_quantiles(self, quantiles: tuple[float, ...]) -> dict[float, float]:
        now = self._clock()
        latencies = [latency for t, latency in list(self._recent) if t >= now - self.WINDOW_S]
        if not latencies:
            return {}
        values = np.quantile(latencies, quantiles)
        return {q: float(v) for q, v in zip(quantiles, values, strict=True)}
