"""What every target of the TFLite reader shares (the TensorFlow graph in
`models/tensorflow_target.py`, the torch module in `models/torch_target.py`): the context an
operator's implementation sees (its inputs and options, read and checked once here), a
target's table of implementations with the check that a model is one it rebuilds, and the
checks of the shapes each step gives."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.registry import ModelSpec
from models.tflite_reader import (
    ConversionError,
    TFLiteGraph,
    TFLiteOperator,
    UnsupportedOperatorError,
)

# Enums of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_PADDING = {0: "SAME", 1: "VALID"}
# The custom op's options are a raw TfLiteTransposeConvParams struct, whose padding is the C API
# enum TfLitePadding (0 unknown, 1 same, 2 valid): not the schema's Padding enum above.
_C_PADDING = {1: "SAME", 2: "VALID"}
ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


class OperatorContext:
    """What an operator's implementation sees: its inputs (a target's values or numpy
    constants) and its options."""

    def __init__(self, graph: TFLiteGraph, values: dict[int, Any], op: TFLiteOperator) -> None:
        self.graph = graph
        self.values = values
        self.op = op

    def input(self, position: int) -> Any:
        value = self.optional_input(position)
        if value is None:
            raise ConversionError(f"{self.where} has no input {position}")
        return value

    def optional_input(self, position: int) -> Any | None:
        if position >= len(self.op.inputs) or self.op.inputs[position] < 0:
            return None
        index = self.op.inputs[position]
        if index not in self.values:
            name = self.graph.tensors[index].name
            raise ConversionError(f"{self.where} reads {name!r} before any operator writes it")
        return self.values[index]

    def input_shape(self, position: int) -> tuple[int, ...]:
        """The NHWC shape TFLite records for an input (batch 1)."""
        return self.graph.tensors[self.op.inputs[position]].shape

    def constant(self, position: int) -> np.ndarray:
        value = self.input(position)
        if not isinstance(value, np.ndarray):
            raise ConversionError(f"{self.where}: input {position} must be a constant")
        return value

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.op.options, name, default) if self.op.options is not None else default

    def padding(self) -> str:
        code = self.option("padding", 0)
        if code not in _PADDING:
            raise UnsupportedOperatorError(f"{self.where}: padding code {code} is not supported")
        return _PADDING[code]

    def activation_code(self, supported: tuple[int, ...]) -> int:
        code = self.option("fusedActivationFunction", 0)
        if code not in supported:
            name = ACTIVATION_NAMES.get(code, str(code))
            raise UnsupportedOperatorError(f"{self.where}: fused activation {name} not supported")
        return code

    def transpose_conv_options(self) -> tuple[str, int, int]:
        """The custom transposed convolution's (padding, stride_h, stride_w).

        Its options are the bytes of a TfLiteTransposeConvParams struct (int32 padding,
        stride_width, stride_height, native endianness: little on every platform MediaPipe
        targets), read by the kernel from custom_initial_data; not a flexbuffer like most
        custom ops' options.
        """
        options = self.op.custom_options or b""
        if len(options) < 12:
            raise ConversionError(f"{self.where}: custom options {options!r} are too short")
        padding_code, stride_w, stride_h = struct.unpack_from("<3i", options)
        if padding_code not in _C_PADDING:
            raise UnsupportedOperatorError(
                f"{self.where}: padding code {padding_code} not supported"
            )
        return _C_PADDING[padding_code], stride_h, stride_w

    def dequantized_constant(self) -> np.ndarray:
        """DEQUANTIZE of a float16 constant, done once at build time: float32."""
        source = self.graph.tensors[self.op.inputs[0]]
        value = self.input(0)
        if not isinstance(value, np.ndarray) or source.dtype != np.dtype("<f2"):
            # The selfie models only store float16 weights; int8 weights need their scales.
            raise UnsupportedOperatorError(
                f"{self.where}: only float16 constants can be dequantized, not {source.name!r}"
            )
        return value.astype(np.float32)

    @property
    def where(self) -> str:
        return f"operator #{self.op.index} ({self.op.name})"


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding of one axis as (before, after): the odd pixel goes after, so a 3x3
    stride-2 kernel on an even size pads 0 before and 1 after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class OperatorTable:
    """One target's implementations: builtin operators by name, custom ones by custom code."""

    builtin: dict[str, Callable[[OperatorContext], Any]]
    custom: dict[str, Callable[[OperatorContext], Any]]

    def names(self) -> list[str]:
        return sorted(self.builtin) + [f"CUSTOM {name}" for name in sorted(self.custom)]

    def implementation(self, op: TFLiteOperator) -> Callable[[OperatorContext], Any]:
        if op.custom_code is not None:
            if op.custom_code in self.custom:
                return self.custom[op.custom_code]
            raise UnsupportedOperatorError(
                f"TFLite custom operator {op.custom_code!r} is not supported by the converter"
            )
        if op.name in self.builtin:
            return self.builtin[op.name]
        raise UnsupportedOperatorError(
            f"TFLite operator {op.name} (builtin code {op.builtin_code}) "
            "is not supported by the converter"
        )

    def check_model(self, graph: TFLiteGraph, spec: ModelSpec) -> None:
        """Fails before anything is built when the graph is not a model this table rebuilds."""
        for op in graph.operators:
            self.implementation(op)
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ConversionError(
                f"expected one input and one output, found {len(graph.inputs)} and "
                f"{len(graph.outputs)}"
            )
        source = graph.tensors[graph.inputs[0]]
        expected = (1, spec.input_height, spec.input_width, 3)
        if source.shape != expected or source.type_code != 0:
            raise ConversionError(
                f"model input {source.name!r} has shape {source.shape} and TFLite type "
                f"{source.type_code}; {spec.name!r} expects float32 {expected}"
            )
        result = graph.tensors[graph.outputs[0]]
        if result.shape != (1, spec.input_height, spec.input_width, 1):
            raise ConversionError(
                f"model output {result.name!r} has shape {result.shape}; expected "
                f"(1, {spec.input_height}, {spec.input_width}, 1)"
            )


def check_shape(op: TFLiteOperator, graph: TFLiteGraph, nhwc_shape: tuple[int, ...]) -> None:
    """TFLite records every activation's shape: a mismatch means an operator was misread."""
    expected = graph.tensors[op.outputs[0]]
    if nhwc_shape[1:] != expected.shape[1:] or len(nhwc_shape) != len(expected.shape):
        raise ConversionError(
            f"operator #{op.index} ({op.name}) gives shape {nhwc_shape}, TFLite says "
            f"{expected.shape} for {expected.name!r}"
        )


def constant_values(graph: TFLiteGraph) -> dict[int, Any]:
    """The graph's constants by tensor index: where every target's walk starts."""
    return {i: tensor.data for i, tensor in enumerate(graph.tensors) if tensor.data is not None}
