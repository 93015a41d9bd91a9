"""The torch engine on the CPU: the same alpha as the TFLite engine, the engine contract, and
the CUDA side's own decisions (padding, chunks, the float16 check) as plain functions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from models.registry import model_spec
from models.verify import photo_frames
from service.engines.tflite import TFLiteEngine
from service.engines.torch_engine import (
    TorchEngine,
    chunks,
    half_holds,
    mask_iou,
    photo_check_frames,
    use_ieee_float32,
)

SPEC = model_spec("selfie-general")


@pytest.fixture(scope="module")
def torch_engine(model_paths: dict[str, Path]) -> TorchEngine:
    return TorchEngine(SPEC, model_paths[SPEC.name], "cpu", threads=1)


@pytest.mark.parametrize("batch", [1, 5])
def test_torch_gives_the_tflite_engines_alpha(
    torch_engine: TorchEngine, model_paths: dict[str, Path], batch: int
) -> None:
    frames = photo_frames(SPEC, 8)[np.arange(batch) % 8]
    tflite = TFLiteEngine(SPEC, model_paths[SPEC.name], num_threads=1).infer(frames)
    alpha = torch_engine.infer(frames)
    assert alpha.dtype == np.float32 and alpha.shape == (batch, 256, 256)
    assert np.abs(alpha - tflite).max() <= 1e-3


def test_the_engine_contract_on_the_cpu(
    torch_engine: TorchEngine, caplog: pytest.LogCaptureFixture
) -> None:
    assert (torch_engine.name, torch_engine.device) == ("torch", "cpu")
    assert torch_engine.precision == "float32" and torch_engine.max_batch_size is None
    assert torch_engine.padded_size(5) == 5  # the CPU runs any batch as it comes
    with caplog.at_level(logging.INFO, logger="service.engines.torch_engine"):
        torch_engine.warm_up()
        torch_engine.warm_up()  # a second warm-up (`--engine auto`, then the pipeline) is free
    lines = [r.getMessage() for r in caplog.records if "warmed up" in r.getMessage()]
    assert len(lines) == 1 and "selfie-general on torch (cpu, float32)" in lines[0]


def test_an_unknown_precision_is_refused(model_paths: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"precision must be one of .*; was 'int8'"):
        TorchEngine(SPEC, model_paths[SPEC.name], precision="int8")


@pytest.mark.parametrize(
    ("frames", "runs"),
    [
        (1, [(0, 1, 1)]),
        (3, [(0, 3, 4)]),
        (32, [(0, 32, 32)]),
        (40, [(0, 32, 32), (32, 8, 8)]),
        (70, [(0, 32, 32), (32, 32, 32), (64, 6, 8)]),
    ],
)
def test_cuda_batches_run_in_chunks_padded_to_the_captured_sizes(
    frames: int, runs: list[tuple[int, int, int]]
) -> None:
    assert chunks(frames, (1, 2, 4, 8, 16, 32)) == runs


def test_float16_is_kept_only_where_every_frame_keeps_its_mask() -> None:
    full = np.zeros((2, 10, 10), np.float32)
    full[:, :, :5] = 0.9
    nearly = full.copy()
    nearly[0, 0, 5] = 0.6  # one pixel of 50: IoU 0.98
    assert mask_iou(full[0], nearly[0]) == pytest.approx(50 / 51)
    assert half_holds(full, full) and not half_holds(full, nearly)
    assert half_holds(full, nearly, least=0.98)
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_the_float16_check_has_photos_without_scikit_image_or_matplotlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GPU host or image has neither package: the shipped copies of the photos stand in."""
    from models import verify

    packaged = verify.astronaut(), verify.grace_hopper()
    monkeypatch.setitem(sys.modules, "skimage", None)  # importing either now fails
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    shipped = verify.astronaut(), verify.grace_hopper()
    for original, copy in zip(packaged, shipped, strict=True):
        assert original.shape == copy.shape
        assert np.abs(original.astype(float) - copy).mean() < 3.0  # a JPEG re-encoding at most
    assert photo_check_frames(SPEC).shape == (8, 256, 256, 3)


def test_float32_on_cuda_is_ieee_by_the_flags_this_torch_reads() -> None:
    """cuDNN's convolutions default to TF32; the engine sets the flags torch 2.9 and later
    read (never the legacy allow_tf32, whose mix with them is an error)."""
    import torch

    assert torch.backends.cudnn.conv.fp32_precision in ("tf32", "ieee", "none")
    use_ieee_float32()
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_an_engine_on_the_cpu_captures_no_graphs(torch_engine: TorchEngine) -> None:
    torch_engine.warm_up()
    assert torch_engine.graph_sizes == ()  # every batch size says it runs eagerly
