"""The layers of a TFLite model rebuilt for torch (`models/torch_target.py`), in NCHW.

Each layer is a small `torch.nn.Module` that holds its weights as buffers and records which
TFLite tensors it reads (`inputs`) and writes (`output`). Defined on first use, so that
importing the target needs no torch.
"""

from __future__ import annotations

import functools

import numpy as np

from models.tflite_reader import UnsupportedOperatorError


def layer(name: str) -> type:
    """The layer class called `name`."""
    return _layers()[name]


def nchw_constant(value: np.ndarray) -> np.ndarray:
    """A constant operand broadcast against NHWC activations, moved to broadcast against NCHW:
    leading ones first (as broadcasting does), then the channel axis to position 1."""
    if value.ndim > 4:
        raise UnsupportedOperatorError(f"a constant operand of rank {value.ndim}")
    return value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(0, 3, 1, 2)


@functools.cache
def _layers() -> dict[str, type]:
    """The layer classes by name."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def activate(x: torch.Tensor, code: int) -> torch.Tensor:
        if code == 1:
            return F.relu(x)
        if code == 3:
            return F.hardtanh(x, 0.0, 6.0)
        return x

    class Step(nn.Module):
        inputs: tuple[int, ...] = ()
        output: int = -1

    class Convolution(Step):
        def __init__(self, weight, bias, stride, dilation, pads, groups, activation) -> None:
            super().__init__()
            self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight)))
            self.register_buffer(
                "bias", None if bias is None else torch.from_numpy(bias.astype(np.float32))
            )
            self.stride, self.dilation, self.groups = stride, dilation, groups
            top, bottom, left, right = pads
            # Even padding goes to the convolution itself; TFLite's uneven SAME needs F.pad.
            self.symmetric = (top, left) if (top, left) == (bottom, right) else None
            self.pad = None if self.symmetric else (left, right, top, bottom)
            self.activation = activation

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.pad is not None:
                x = F.pad(x, self.pad)
            y = F.conv2d(
                x,
                self.weight,
                self.bias,
                self.stride,
                self.symmetric or 0,
                self.dilation,
                self.groups,
            )
            return activate(y, self.activation)

    class TransposedConvolution(Step):
        def __init__(self, weight, bias, stride, crop, out_size) -> None:
            super().__init__()
            self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight)))
            self.register_buffer(
                "bias", None if bias is None else torch.from_numpy(bias.astype(np.float32))
            )
            self.stride, self.crop, self.out_size = stride, crop, out_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
            (top, left), (height, width) = self.crop, self.out_size
            return y[:, :, top : top + height, left : left + width]

    class Binary(Step):
        def __init__(self, function: str, constant: np.ndarray | None, activation: int) -> None:
            super().__init__()
            self.function = torch.add if function == "ADD" else torch.mul
            tensor = None if constant is None else torch.from_numpy(nchw_constant(constant))
            self.register_buffer("constant", tensor)
            self.activation = activation

        def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
            y = self.function(a, self.constant if b is None else b)
            return activate(y, self.activation)

    class Unary(Step):
        def __init__(self, function: str) -> None:
            super().__init__()
            self.function = {"RELU": F.relu, "HARD_SWISH": F.hardswish, "LOGISTIC": torch.sigmoid}[
                function
            ]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.function(x)

    class AveragePool(Step):
        def __init__(self, kernel, stride, pads, whole, activation) -> None:
            super().__init__()
            self.kernel, self.stride, self.pads = kernel, stride, pads
            self.whole, self.activation = whole, activation

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.whole:  # one window over the whole map: a mean, cheaper than a pool
                y = x.mean((2, 3), keepdim=True)
            else:
                # SAME averages over the valid cells only, like TFLite.
                y = F.avg_pool2d(x, self.kernel, self.stride, self.pads, count_include_pad=False)
            return activate(y, self.activation)

    class Mean(Step):
        def __init__(self, dims: tuple[int, ...]) -> None:
            super().__init__()
            self.dims = dims

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(self.dims, keepdim=True)

    class Resize(Step):
        def __init__(self, size: tuple[int, int], align_corners: bool) -> None:
            super().__init__()
            self.size, self.align_corners = size, align_corners

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, self.size, mode="bilinear", align_corners=self.align_corners)

    classes = (Step, Convolution, TransposedConvolution, Binary, Unary, AveragePool, Mean, Resize)
    return {cls.__name__: cls for cls in classes}
