"""The engines side by side on real photos: the TensorFlow engine matches the TFLite one,
pads and splits batches as it says, the TFLite engine splits batches by the costs it measures
at warm-up, and `auto` on a host without a GPU serves with TFLite without loading TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.convert import ensure_savedmodel
from models.registry import model_spec
from models.verify import photo_frames
from service.engines.selection import choose_engine
from service.engines.tensorflow import TensorFlowEngine, configure_tensorflow
from service.engines.tflite import TFLiteEngine
from tests.helpers import loopback_config

SPEC = model_spec("selfie-general")


@pytest.fixture(scope="module")
def engines(model_paths: dict[str, Path]) -> tuple[TFLiteEngine, TensorFlowEngine]:
    config = loopback_config()
    savedmodel = ensure_savedmodel(SPEC, model_paths[SPEC.name], Path(config.model_dir))
    device = configure_tensorflow(config.engine_threads)
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
    model_paths: dict[str, Path],
) -> None:
    engine = TFLiteEngine(SPEC, model_paths[SPEC.name], num_threads=1, copies=2)
    frames = photo_frames(SPEC, 8)
    one_by_one = np.concatenate([engine.infer(frames[n : n + 1]) for n in range(8)])
    assert len(engine.plan.split(7)) == 2, "before the warm-up, the fewest runs"
    engine.warm_up()
    assert set(engine.plan.seconds_per_run) == set(TFLiteEngine.CANDIDATE_SIZES)
    assert all(seconds > 0 for seconds in engine.plan.seconds_per_run.values())
    assert 1 in engine.batch_sizes and set(engine.batch_sizes) <= set(engine.CANDIDATE_SIZES)
    assert engine.batch_sizes == engine.plan.sizes_used
    # Whatever the split, every frame gets its own alpha, on either copy of the model.
    for batch in (2, 5, 7, 8):
        assert sum(engine.plan.split(batch)) == batch
        assert np.abs(engine.infer(frames[:batch]) - one_by_one[:batch]).max() <= 1e-5


def test_xla_compiled_tensorflow_matches(
    engines: tuple[TFLiteEngine, TensorFlowEngine], model_paths: dict[str, Path]
) -> None:
    savedmodel = ensure_savedmodel(SPEC, model_paths[SPEC.name], Path(loopback_config().model_dir))
    xla = TensorFlowEngine(SPEC, savedmodel, "cpu", (1, 2), xla=True)
    frames = photo_frames(SPEC, 2)
    assert np.abs(xla.infer(frames) - engines[0].infer(frames)).max() <= 1e-3


def test_auto_on_a_host_without_a_gpu_serves_tflite_and_never_loads_tensorflow() -> None:
    # A fresh interpreter: this one has loaded TensorFlow for the tests above.
    script = (
        "import sys\n"
        "from models.registry import model_spec\n"
        "from service.engines.selection import EngineSettings, choose_engine, create_engine\n"
        "from models.fetch import ensure_model_files, default_model_dir\n"
        "spec = model_spec('selfie-general')\n"
        "path = ensure_model_files([spec], default_model_dir(), fetch=False)[spec.name]\n"
        "engine = create_engine(EngineSettings(engine='auto'), spec, path)\n"
        "print(engine.name, choose_engine('auto').reason, 'tensorflow' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert output.startswith("tflite no GPU on this host"), output
    assert output.endswith("False"), f"TensorFlow was imported: {output}"


def test_an_engine_asked_for_by_name_is_taken_as_asked() -> None:
    assert choose_engine("tensorflow").engine == "tensorflow"
    assert choose_engine("model-free").engine == "model-free"
