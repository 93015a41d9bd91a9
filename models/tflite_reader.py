"""Reads a TFLite flatbuffer into plain data: tensors (constants as numpy arrays) and operators.

The schema bindings come from `ai_edge_litert.schema_py_generated`, which imports nothing but
`flatbuffers`: reading a model needs neither TensorFlow nor PyTorch, so every target (the
TensorFlow graph in `models/tensorflow_target.py`, the torch module in `models/torch_target.py`)
shares this reader and `models/tflite_operators.py` (what an operator's implementation sees,
the operator table and its checks), and each brings only its own implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# MediaPipe's custom op: a transposed convolution with its bias added in the same kernel.
TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"

_TENSOR_DTYPES = {
    0: np.dtype("<f4"),  # FLOAT32
    1: np.dtype("<f2"),  # FLOAT16
    2: np.dtype("<i4"),  # INT32
    3: np.dtype("u1"),  # UINT8
    4: np.dtype("<i8"),  # INT64
    6: np.dtype("?"),  # BOOL
    9: np.dtype("i1"),  # INT8
}


class ConversionError(Exception):
    """The TFLite model cannot be rebuilt faithfully for a target."""


class UnsupportedOperatorError(ConversionError):
    """The model uses an operator (or an option of one) that the converter does not know."""


@dataclass(frozen=True)
class TFLiteTensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None  # None: a type the converter never needs as a constant
    type_code: int
    data: np.ndarray | None  # the constant's value; None for activations


@dataclass(frozen=True)
class TFLiteOperator:
    index: int
    name: str  # "CONV_2D", or the custom code for CUSTOM operators
    builtin_code: int
    custom_code: str | None
    inputs: tuple[int, ...]  # -1: an optional input left out
    outputs: tuple[int, ...]
    options: Any  # the schema's *OptionsT object, or None
    custom_options: bytes | None


@dataclass(frozen=True)
class TFLiteGraph:
    tensors: tuple[TFLiteTensor, ...]
    operators: tuple[TFLiteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_tflite(model: bytes | Path) -> TFLiteGraph:
    """The first subgraph of a TFLite flatbuffer, with its constants as numpy arrays."""
    from ai_edge_litert import schema_py_generated as schema

    raw = model.read_bytes() if isinstance(model, Path) else bytes(model)
    if not schema.Model.ModelBufferHasIdentifier(raw, 0):
        raise ConversionError("not a TFLite flatbuffer (file identifier is not TFL3)")
    parsed = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    if len(parsed.subgraphs) != 1:
        raise ConversionError(f"expected one subgraph, found {len(parsed.subgraphs)}")
    subgraph = parsed.subgraphs[0]
    builtin_names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }

    tensors = []
    for tensor in subgraph.tensors:
        if tensor.sparsity is not None:
            raise ConversionError(f"tensor {_text(tensor.name)!r} is sparse; not supported")
        shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
        dtype = _TENSOR_DTYPES.get(tensor.type)
        tensors.append(
            TFLiteTensor(
                name=_text(tensor.name),
                shape=shape,
                dtype=dtype,
                type_code=tensor.type,
                data=_constant_data(raw, parsed.buffers[tensor.buffer], tensor, shape, dtype),
            )
        )

    operators = []
    for index, op in enumerate(subgraph.operators):
        code = parsed.operatorCodes[op.opcodeIndex]
        # Codes above 127 live only in builtinCode; older files only fill the deprecated byte.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = _text(code.customCode) if code.customCode is not None else None
        name = custom if builtin == schema.BuiltinOperator.CUSTOM and custom else None
        operators.append(
            TFLiteOperator(
                index=index,
                name=name or builtin_names.get(builtin, f"UNKNOWN_{builtin}"),
                builtin_code=builtin,
                custom_code=custom,
                inputs=tuple(int(i) for i in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(i) for i in (op.outputs if op.outputs is not None else ())),
                options=op.builtinOptions,
                custom_options=(
                    bytes(np.asarray(op.customOptions, np.uint8))
                    if op.customOptions is not None
                    else None
                ),
            )
        )
    return TFLiteGraph(
        tensors=tuple(tensors),
        operators=tuple(operators),
        inputs=tuple(int(i) for i in subgraph.inputs),
        outputs=tuple(int(i) for i in subgraph.outputs),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _constant_data(
    raw: bytes, buffer: Any, tensor: Any, shape: tuple[int, ...], dtype: np.dtype | None
) -> np.ndarray | None:
    if getattr(tensor, "externalBuffer", 0):
        raise ConversionError(f"tensor {_text(tensor.name)!r} uses an external buffer")
    if buffer.data is not None and len(buffer.data):
        data = np.asarray(buffer.data, np.uint8).tobytes()
    elif getattr(buffer, "offset", 0) > 1:  # files over 2 GB keep buffers after the flatbuffer
        data = raw[buffer.offset : buffer.offset + buffer.size]
    else:
        return None
    if dtype is None:
        raise ConversionError(
            f"constant tensor {_text(tensor.name)!r} has TFLite type {tensor.type}, "
            "which the converter does not read"
        )
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))
