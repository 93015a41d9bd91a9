"""Wall time of a piece of work, for the benchmarks that time one call in isolation."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_ms(work: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls of `work`, in ms, after one unmeasured call (the first
    call traces, allocates and warms caches)."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3
