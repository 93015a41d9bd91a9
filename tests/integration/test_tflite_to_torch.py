"""The TFLite -> torch target: same output as the interpreter on real photos, at batch 1 and 8,
built from the file's own weights with no TensorFlow, and TFLite's layout and padding kept."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import torch_layers, torch_target
from models.registry import MODELS, model_spec
from models.tflite_operators import same_padding
from models.tflite_reader import (
    TRANSPOSE_CONV_BIAS,
    ConversionError,
    UnsupportedOperatorError,
    read_tflite,
)
from models.torch_target import build_torch_module
from models.verify import TOLERANCE, photo_frames, verify_torch


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_module_matches_the_interpreter_at_batch_1_and_8(
    name: str, model_paths: dict[str, Path]
) -> None:
    results = verify_torch(model_spec(name), model_paths[name])
    assert [(result.target, result.batch) for result in results] == [("torch", 1), ("torch", 8)]
    for result in results:
        assert result.max_abs_diff <= TOLERANCE, result


def test_frames_of_a_batch_stay_apart(model_paths: dict[str, Path]) -> None:
    spec = model_spec("selfie-landscape")
    module = build_torch_module(spec, model_paths[spec.name])
    frames = photo_frames(spec, 3)
    with torch.inference_mode():
        alpha = module(torch.from_numpy(frames))
    assert alpha.dtype == torch.float32 and tuple(alpha.shape) == (3, 144, 256)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    assert not np.allclose(alpha[0].numpy(), alpha[1].numpy(), atol=0.05)


def test_half_precision_keeps_the_masks(model_paths: dict[str, Path]) -> None:
    """bfloat16 stands in on the CPU for CUDA's float16: the module converts as a whole."""
    spec = model_spec("selfie-landscape")
    module = build_torch_module(spec, model_paths[spec.name])
    frames = torch.from_numpy(photo_frames(spec, 2))
    with torch.inference_mode():
        full = module(frames) > 0.5
        half = module.to(torch.bfloat16)(frames) > 0.5
    assert half.dtype == torch.bool
    iou = (full & half).sum() / (full | half).sum()
    assert float(iou) >= 0.98


def test_tflite_same_padding_goes_mostly_after() -> None:
    assert same_padding(256, 3, 2) == (0, 1)  # 3x3 stride 2 on an even size: all after
    assert same_padding(32, 5, 2) == (1, 2)
    assert same_padding(9, 3, 1) == (1, 1)
    assert same_padding(255, 3, 2) == (1, 1)


def test_a_misread_padding_fails_the_shape_check(
    model_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model_spec("selfie-landscape")
    monkeypatch.setattr(torch_target, "same_padding", lambda *args: (1, 1))
    with pytest.raises(ConversionError, match=r"gives shape .* TFLite says"):
        build_torch_module(spec, model_paths[spec.name])


def test_constant_operands_move_to_nchw() -> None:
    per_channel = np.arange(3, dtype=np.float32)
    assert torch_layers.nchw_constant(per_channel).shape == (1, 3, 1, 1)
    nhwc = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3)
    moved = torch_layers.nchw_constant(nhwc)
    assert moved.shape == (1, 3, 2, 4) and moved[0, 2, 1, 3] == nhwc[0, 1, 3, 2]


def test_unknown_custom_operator_is_named(model_paths: dict[str, Path]) -> None:
    spec = model_spec("selfie-general")
    graph = read_tflite(model_paths[spec.name])
    renamed = tuple(
        dataclasses.replace(op, name="MaxPoolingWithArgmax2D", custom_code="MaxPoolingWithArgmax2D")
        if op.custom_code == TRANSPOSE_CONV_BIAS
        else op
        for op in graph.operators
    )
    torch_target.check_model(graph, spec)
    with pytest.raises(UnsupportedOperatorError, match="'MaxPoolingWithArgmax2D'"):
        torch_target.check_model(dataclasses.replace(graph, operators=renamed), spec)


def test_reading_and_building_need_no_tensorflow(model_paths: dict[str, Path]) -> None:
    """The GPU host has torch but neither TensorFlow nor LiteRT's interpreter."""
    path = model_paths["selfie-general"]
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from models.registry import model_spec\n"
        "from models.torch_target import build_torch_module\n"
        f"build_torch_module(model_spec('selfie-general'), Path({str(path)!r}))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
