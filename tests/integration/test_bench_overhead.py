"""`make bench`'s serving overhead line measures a real server under the real generator, and
the benchmark refuses sections it does not have."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtest.bench.service import OVERHEAD_RESOLUTION, serving_overhead
from loadtest.process_cpu import GROUPS


def test_the_serving_overhead_is_the_servers_cpu_per_answered_frame() -> None:
    figures = serving_overhead(seconds=2.0)
    assert figures.resolution == OVERHEAD_RESOLUTION == "160x120"
    assert figures.streams == 20
    # 20 calls at 30 FPS over the measured 2 s, and more over the warm-up the server counts.
    assert figures.ok_frames >= 20 * 30 * 2 * 0.8
    assert figures.error_ratio == 0.0
    groups = [figures.cpu_ms_per_ok[group] for group in GROUPS]
    assert figures.cpu_ms_per_ok["total"] == pytest.approx(sum(groups))
    assert figures.cpu_ms_per_ok["event_loop"] > 0 and figures.cpu_ms_per_ok["codec"] > 0


def test_an_unknown_section_is_refused_by_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--only", "overhead,speed"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown sections ['speed']" in result.stderr
    assert "memory,floor,load,front-end,overhead,capacity,engines" in result.stderr
