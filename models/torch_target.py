"""The torch target: a TFLite model rebuilt as a plain `torch.nn.Module` from the file's own
weights, for the torch engine (CPU and CUDA) where neither TensorFlow nor LiteRT is installed.

Activations run in NCHW (channels_last in memory on CUDA, which is the NHWC byte order the
model's frames arrive in), so the TFLite file's NHWC view is translated at build time, never at
run time: kernels are transposed, constant operands of ADD and MUL are moved to NCHW, MEAN's
axes are mapped, and TFLite's SAME padding, which puts the odd pixel after (a 3x3 stride-2
kernel on an even size pads 0 before and 1 after, where torch's `padding=` would pad both
sides), is an explicit `F.pad` on the layers that need it. After building, one run of a blank
frame checks every activation's shape against the shape TFLite records for it.

The module maps uint8 frames (N, H, W, 3) to float32 alpha (N, H, W), like the SavedModel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models import torch_layers
from models.registry import ModelSpec
from models.tflite_operators import (
    OperatorContext,
    OperatorTable,
    check_shape,
    constant_values,
    same_padding,
)
from models.tflite_reader import (
    TRANSPOSE_CONV_BIAS,
    ConversionError,
    TFLiteGraph,
    UnsupportedOperatorError,
    read_tflite,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

# NHWC axis -> NCHW axis.
_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class _Activation:
    """A value computed from the frames while the module is built: only its NHWC shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _pads(ctx: OperatorContext, kernel_h: int, kernel_w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for the operator's padding on its input."""
    if ctx.padding() == "VALID":
        return 0, 0, 0, 0
    _, height, width, _ = ctx.input_shape(0)
    top, bottom = same_padding(
        height, kernel_h, ctx.option("strideH", 1), ctx.option("dilationHFactor", 1)
    )
    left, right = same_padding(
        width, kernel_w, ctx.option("strideW", 1), ctx.option("dilationWFactor", 1)
    )
    return top, bottom, left, right


# --- the operator table: each builds one step (or folds a constant) ---------------------------


def _bias(ctx: OperatorContext, position: int) -> np.ndarray | None:
    bias = ctx.optional_input(position)
    if bias is not None and not isinstance(bias, np.ndarray):
        raise ConversionError(f"{ctx.where}: the bias must be a constant")
    return bias


def _conv_2d(ctx: OperatorContext) -> nn.Module:
    kernel = ctx.constant(1)  # (out, kh, kw, in)
    if kernel.shape[3] != ctx.input_shape(0)[3]:
        raise UnsupportedOperatorError(f"{ctx.where}: grouped convolution is not supported")
    return torch_layers.layer("Convolution")(
        kernel.transpose(0, 3, 1, 2).astype(np.float32),  # -> (out, in, kh, kw)
        _bias(ctx, 2),
        (ctx.option("strideH", 1), ctx.option("strideW", 1)),
        (ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1)),
        _pads(ctx, kernel.shape[1], kernel.shape[2]),
        1,
        ctx.activation_code((0, 1, 3)),
    )


def _depthwise_conv_2d(ctx: OperatorContext) -> nn.Module:
    kernel = ctx.constant(1)  # (1, kh, kw, in * multiplier)
    channels = ctx.input_shape(0)[3]
    if kernel.shape[0] != 1 or kernel.shape[3] % channels:
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for {channels} channels")
    # Output channel c * multiplier + m reads input channel c: torch's groups do the same.
    return torch_layers.layer("Convolution")(
        kernel[0].transpose(2, 0, 1)[:, None].astype(np.float32),  # -> (in * m, 1, kh, kw)
        _bias(ctx, 2),
        (ctx.option("strideH", 1), ctx.option("strideW", 1)),
        (ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1)),
        _pads(ctx, kernel.shape[1], kernel.shape[2]),
        channels,
        ctx.activation_code((0, 1, 3)),
    )


def _transpose_conv_bias(ctx: OperatorContext) -> nn.Module:
    """MediaPipe's Convolution2DTransposeBias: the full transposed convolution, then TFLite's
    SAME crop (the odd pixel cut after, as in its forward padding)."""
    padding, stride_h, stride_w = ctx.transpose_conv_options()
    kernel = ctx.constant(1)  # (out, kh, kw, in)
    _, kernel_h, kernel_w, in_channels = kernel.shape
    _, height, width, channels = ctx.input_shape(0)
    if in_channels != channels:
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for {channels} channels")
    full_h, full_w = (height - 1) * stride_h + kernel_h, (width - 1) * stride_w + kernel_w
    if padding == "SAME":
        out_h, out_w = height * stride_h, width * stride_w
        crop = ((full_h - out_h) // 2, (full_w - out_w) // 2)
    else:
        out_h, out_w, crop = full_h, full_w, (0, 0)
    return torch_layers.layer("TransposedConvolution")(
        kernel.transpose(3, 0, 1, 2).astype(np.float32),  # -> (in, out, kh, kw)
        _bias(ctx, 2),
        (stride_h, stride_w),
        crop,
        (out_h, out_w),
    )


def _binary(ctx: OperatorContext) -> nn.Module | np.ndarray:
    a, b = ctx.input(0), ctx.input(1)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):  # folded once, here
        folded = a + b if ctx.op.name == "ADD" else a * b
        if ctx.activation_code((0,)) == 0:
            return folded
    constant = b if isinstance(b, np.ndarray) else a if isinstance(a, np.ndarray) else None
    return torch_layers.layer("Binary")(
        ctx.op.name,
        None if constant is None else constant.astype(np.float32),
        ctx.activation_code((0, 1, 3)),
    )


def _unary(ctx: OperatorContext) -> nn.Module:
    return torch_layers.layer("Unary")(ctx.op.name)


def _average_pool_2d(ctx: OperatorContext) -> nn.Module:
    kernel = (ctx.option("filterHeight"), ctx.option("filterWidth"))
    stride = (ctx.option("strideH"), ctx.option("strideW"))
    top, bottom, left, right = _pads(ctx, *kernel)
    if (top, left) != (bottom, right):
        raise UnsupportedOperatorError(f"{ctx.where}: uneven SAME padding of a pool")
    _, height, width, _ = ctx.input_shape(0)
    whole = ctx.padding() == "VALID" and kernel == (height, width)
    return torch_layers.layer("AveragePool")(
        kernel, stride, (top, left), whole, ctx.activation_code((0, 1, 3))
    )


def _mean(ctx: OperatorContext) -> nn.Module:
    axes = sorted({int(a) % 4 for a in np.atleast_1d(ctx.constant(1))})
    if 0 in axes:
        # Averaging over the batch would mix frames once the batch is more than one frame.
        raise UnsupportedOperatorError(f"{ctx.where}: a mean over the batch axis is not supported")
    if not ctx.option("keepDims", False):
        raise UnsupportedOperatorError(f"{ctx.where}: a mean that drops its axes")
    return torch_layers.layer("Mean")(tuple(_NCHW_AXIS[a] for a in axes))


def _resize_bilinear(ctx: OperatorContext) -> nn.Module:
    size = tuple(int(s) for s in ctx.constant(1))
    align_corners = bool(ctx.option("alignCorners", False))
    if not align_corners and not ctx.option("halfPixelCenters", False):
        # TensorFlow 1's legacy sampling has no torch equivalent.
        raise UnsupportedOperatorError(f"{ctx.where}: resize without half-pixel centers")
    return torch_layers.layer("Resize")(size, align_corners)


OPERATORS = OperatorTable(
    builtin={
        "ADD": _binary,
        "AVERAGE_POOL_2D": _average_pool_2d,
        "CONV_2D": _conv_2d,
        "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
        "DEQUANTIZE": lambda ctx: ctx.dequantized_constant(),
        "HARD_SWISH": _unary,
        "LOGISTIC": _unary,
        "MEAN": _mean,
        "MUL": _binary,
        "RELU": _unary,
        "RESIZE_BILINEAR": _resize_bilinear,
    },
    custom={TRANSPOSE_CONV_BIAS: _transpose_conv_bias},
)


def build_torch_module(spec: ModelSpec, tflite_model: bytes | Path) -> nn.Module:
    """A torch module mapping uint8 frames (N, H, W, 3) to float32 alpha (N, H, W), in eval
    mode with no parameters to train (the weights are buffers, moved by `.to()` and `.half()`).
    Raises UnsupportedOperatorError for an operator the converter does not know."""
    import torch
    from torch import nn

    graph = read_tflite(tflite_model)
    OPERATORS.check_model(graph, spec)
    values: dict[int, Any] = constant_values(graph)
    values[graph.inputs[0]] = _Activation(graph.tensors[graph.inputs[0]].shape)
    steps = []
    for op in graph.operators:
        if len(op.outputs) != 1:
            raise ConversionError(f"operator #{op.index} has {len(op.outputs)} outputs")
        result = OPERATORS.implementation(op)(OperatorContext(graph, values, op))
        if isinstance(result, np.ndarray):
            values[op.outputs[0]] = result
            continue
        result.inputs = tuple(i for i in op.inputs if i >= 0 and isinstance(values[i], _Activation))
        result.output = op.outputs[0]
        values[op.outputs[0]] = _Activation(graph.tensors[op.outputs[0]].shape)
        steps.append((op, result))

    class SegmentationModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps = nn.ModuleList(step for _, step in steps)
            self.register_buffer("scale", torch.tensor(spec.input_scale, dtype=torch.float32))
            self.offset = float(spec.input_offset)
            self.input_index, self.output_index = graph.inputs[0], graph.outputs[0]
            # The values no later step reads, dropped after each step to keep memory low.
            last_read = {index: n for n, step in enumerate(self.steps) for index in step.inputs}
            self.released = [
                [i for i in step.inputs if last_read[i] == n and i != self.output_index]
                for n, step in enumerate(self.steps)
            ]

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            return self.run(frames)

        def run(self, frames: torch.Tensor, on_step: Any = None) -> torch.Tensor:
            # NHWC bytes viewed as NCHW: the channels_last layout, with no copy.
            pixels = frames.permute(0, 3, 1, 2).to(self.scale.dtype) * self.scale
            if self.offset:  # skipped at 0 so the input is bit-identical to the reference's
                pixels = pixels + self.offset
            values = {self.input_index: pixels}
            for step, released in zip(self.steps, self.released, strict=True):
                values[step.output] = step(*(values[i] for i in step.inputs))
                if on_step is not None:
                    on_step(step, values[step.output])
                for index in released:
                    del values[index]
            return values[self.output_index][:, 0].float()

    module = SegmentationModule().eval()
    module.requires_grad_(False)
    by_step = {id(step): op for op, step in steps}

    def check(step: nn.Module, value: torch.Tensor) -> None:
        shape = tuple(value.shape)
        nhwc = (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape
        check_shape(by_step[id(step)], graph, nhwc)

    with torch.inference_mode():
        blank = torch.zeros((1, spec.input_height, spec.input_width, 3), dtype=torch.uint8)
        module.run(blank, on_step=check)
    return module


def check_model(graph: TFLiteGraph, spec: ModelSpec) -> None:
    """Fails before anything is built when the graph is not a model this target rebuilds."""
    OPERATORS.check_model(graph, spec)
