"""`make bench`'s quality section runs against the service's own smoothing and codec, and its
figures say what smoothing is for: less flicker on a still scene, the more the stronger."""

from __future__ import annotations

from loadtest.bench.quality import measure_quality
from tests.helpers import loopback_config


def test_flicker_falls_as_smoothing_grows_and_every_step_is_costed() -> None:
    figures = measure_quality(loopback_config(models=("selfie-general",)))
    flicker = [figures.flicker[strength] for strength in (0.0, 0.5, 0.8)]
    assert flicker[0] > flicker[1] > flicker[2] > 0, figures.flicker
    assert len(figures.step_ms) == 6
    assert all(small > 0 and large > 0 for small, large in figures.step_ms.values()), figures
