"""Wall time of a piece of work run in isolation: engine warm-ups and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def seconds_to_run(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def median_ms(work: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls of `work`, in ms, after one unmeasured call (the first
    call traces, allocates and warms caches)."""
    work()
    return float(np.median([seconds_to_run(work) for _ in range(runs)])) * 1e3
