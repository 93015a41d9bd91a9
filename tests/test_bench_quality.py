"""`make bench`'s quality section runs against the service's own smoothing and codec, and its
figures say what smoothing is for: less flicker on a still scene, the more the stronger."""

from __future__ import annotations

import re

import pytest

from loadtest.bench_quality import bench_quality
from tests.conftest import loopback_config


def test_flicker_falls_as_smoothing_grows_and_every_step_is_costed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench_quality(loopback_config(models=("selfie-general",)))
    printed = capsys.readouterr().out
    flicker = [float(f) for f in re.findall(r"smoothing \d\.\d: ([\d.]+)", printed)]
    assert len(flicker) == 3 and flicker[0] > flicker[1] > flicker[2] > 0, printed
    costs = re.findall(r"^  (\S.*?)\s+([\d.]+)\s+([\d.]+)$", printed, re.MULTILINE)
    assert len(costs) == 6 and all(float(a) > 0 and float(b) > 0 for _, a, b in costs), printed
