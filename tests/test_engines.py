"""The engines side by side on real photos: the TensorFlow engine matches the TFLite one,
pads and splits batches as it says, the TFLite engine splits batches by the costs it measures
at warm-up, and `auto` picks by measurement."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from models.convert import ensure_savedmodel
from models.registry import model_spec
from models.verify import photo_frames
from service.engines.base import TensorFlowEngine, TFLiteEngine, configure_tensorflow, create_engine
from tests.conftest import loopback_config

SPEC = model_spec("selfie-general")


@pytest.fixture(scope="module")
def engines(model_paths: dict[str, Path]) -> tuple[TFLiteEngine, TensorFlowEngine]:
    config = loopback_config()
    savedmodel = ensure_savedmodel(SPEC, model_paths[SPEC.name], Path(config.model_dir))
    device = configure_tensorflow(config)
    return (
        TFLiteEngine(SPEC, model_paths[SPEC.name], config.engine_threads),
        TensorFlowEngine(SPEC, savedmodel, device, (1, 2, 4, 8, 16, 32)),
    )


@pytest.mark.parametrize(
    ("frames", "padded"), [(1, 1), (3, 4), (5, 8), (16, 16), (17, 32), (33, 33), (40, 40)]
)
def test_tensorflow_pads_to_the_next_batch_size_and_splits_above_the_largest(
    engines: tuple[TFLiteEngine, TensorFlowEngine], frames: int, padded: int
) -> None:
    assert engines[1].padded_size(frames) == padded
    assert engines[0].padded_size(frames) == frames  # sub-batches: no padding


@pytest.mark.parametrize("batch", [1, 5, 40])
def test_both_engines_give_the_same_alpha(
    engines: tuple[TFLiteEngine, TensorFlowEngine], batch: int
) -> None:
    frames = photo_frames(SPEC, 8)[np.arange(batch) % 8]
    tflite, tensorflow = (engine.infer(frames) for engine in engines)
    assert tflite.shape == tensorflow.shape == (batch, 256, 256)
    assert np.abs(tflite - tensorflow).max() <= 1e-3


def test_tflite_splits_batches_by_the_costs_it_measured_at_warm_up(
    model_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    engine = TFLiteEngine(SPEC, model_paths[SPEC.name], num_threads=1, copies=2)
    frames = photo_frames(SPEC, 8)
    one_by_one = np.concatenate([engine.infer(frames[n : n + 1]) for n in range(8)])
    with caplog.at_level(logging.INFO, logger="service.engines.base"):
        engine.warm_up()
    line = next(r.getMessage() for r in caplog.records if "warmed up" in r.getMessage())
    assert all(f"{size}: " in line for size in TFLiteEngine.CANDIDATE_SIZES), line
    assert 1 in engine.batch_sizes and set(engine.batch_sizes) <= set(engine.CANDIDATE_SIZES)
    assert line.endswith(f"batches split into runs of {engine.batch_sizes}")
    # Whatever the split, every frame gets its own alpha, on either copy of the model.
    for batch in (2, 5, 7, 8):
        assert np.abs(engine.infer(frames[:batch]) - one_by_one[:batch]).max() <= 1e-5
    # A second warm-up (`--engine auto` warms before comparing, the pipeline again) keeps it.
    kept = engine.batch_sizes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="service.engines.base"):
        engine.warm_up()
    assert engine.batch_sizes == kept and not caplog.records


def test_xla_compiled_tensorflow_matches(
    engines: tuple[TFLiteEngine, TensorFlowEngine], model_paths: dict[str, Path]
) -> None:
    savedmodel = ensure_savedmodel(SPEC, model_paths[SPEC.name], Path(loopback_config().model_dir))
    xla = TensorFlowEngine(SPEC, savedmodel, "cpu", (1, 2), xla=True)
    frames = photo_frames(SPEC, 2)
    assert np.abs(xla.infer(frames) - engines[0].infer(frames)).max() <= 1e-3


def test_auto_measures_both_engines_on_a_cpu_and_logs_the_figures(
    model_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(loopback_config(), engine="auto", engine_batch_sizes=(1, 8))
    with caplog.at_level(logging.INFO, logger="service.engines.base"):
        engine = create_engine(config, SPEC, model_paths[SPEC.name])
    line = next(r.getMessage() for r in caplog.records if "engine auto" in r.getMessage())
    tflite_ms, tensorflow_ms = (
        float(line.split(f"{name} ")[1].split(" ms")[0]) for name in ("tflite", "tensorflow")
    )
    faster = "tflite" if tflite_ms <= tensorflow_ms else "tensorflow"
    assert engine.name == faster and line.endswith(f"serving with {faster}")
