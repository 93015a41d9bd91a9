"""Rebuilds a TFLite segmentation model as a TensorFlow graph with a free batch dimension.

The TFLite files fix the batch at 1 and MediaPipe's custom transposed convolution has no
TensorFlow kernel, so a GPU can only run them one frame at a time through LiteRT. Here the
flatbuffer is read operator by operator and each one is re-expressed with TensorFlow ops that do
not care about the batch size. The result is a SavedModel that takes uint8 frames (N, H, W, 3)
and returns the person probability (N, H, W); models/verify.py checks it against the interpreter.

Only the operators the selfie models use are supported; any other one is an error that names it,
never a guess.

    python -m models.convert [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.fetch import ModelFileError, default_model_dir, ensure_model_files, sha256_of
from models.registry import MODELS, ModelSpec

if TYPE_CHECKING:
    import tensorflow as tf

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "frames"
OUTPUT_NAME = "alpha"

# MediaPipe's custom op: a transposed convolution with its bias added in the same kernel.
TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"

# Enums of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_PADDING = {0: "SAME", 1: "VALID"}
# The custom op's options are a raw TfLiteTransposeConvParams struct, whose padding is the C API
# enum TfLitePadding (0 unknown, 1 same, 2 valid): not the schema's Padding enum above.
_C_PADDING = {1: "SAME", 2: "VALID"}
_ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_TENSOR_DTYPES = {
    0: np.dtype("<f4"),  # FLOAT32
    1: np.dtype("<f2"),  # FLOAT16
    2: np.dtype("<i4"),  # INT32
    3: np.dtype("u1"),  # UINT8
    4: np.dtype("<i8"),  # INT64
    6: np.dtype("?"),  # BOOL
    9: np.dtype("i1"),  # INT8
}


# Raise when a change to this module changes what it produces.
CONVERTER_VERSION = 1


class ConversionError(Exception):
    """The TFLite model cannot be rebuilt faithfully as a TensorFlow graph."""


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
    # The schema bindings ship with TensorFlow, so no extra package is needed to read the file.
    from tensorflow.lite.python import schema_py_generated as schema

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


# --- operators ----------------------------------------------------------------------------------

Value = Any  # a tf.Tensor (depends on the frames) or an np.ndarray (a constant)


class _Context:
    """What an operator's implementation sees: its inputs as tensors or constants."""

    def __init__(self, graph: TFLiteGraph, values: dict[int, Value], op: TFLiteOperator) -> None:
        self.graph = graph
        self.values = values
        self.op = op

    def input(self, position: int) -> Value:
        value = self.optional_input(position)
        if value is None:
            raise ConversionError(f"{self.where} has no input {position}")
        return value

    def optional_input(self, position: int) -> Value | None:
        if position >= len(self.op.inputs) or self.op.inputs[position] < 0:
            return None
        index = self.op.inputs[position]
        if index not in self.values:
            name = self.graph.tensors[index].name
            raise ConversionError(f"{self.where} reads {name!r} before any operator writes it")
        return self.values[index]

    def constant(self, position: int) -> np.ndarray:
        value = self.input(position)
        if not isinstance(value, np.ndarray):
            raise ConversionError(f"{self.where}: input {position} must be a constant")
        return value

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.op.options, name, default) if self.op.options is not None else default

    @property
    def where(self) -> str:
        return f"operator #{self.op.index} ({self.op.name})"


def _padding(ctx: _Context) -> str:
    code = ctx.option("padding", 0)
    if code not in _PADDING:
        raise UnsupportedOperatorError(f"{ctx.where}: padding code {code} is not supported")
    return _PADDING[code]


def _activation(ctx: _Context, x: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    code = ctx.option("fusedActivationFunction", 0)
    if code == 0:
        return x
    if code == 1:
        return tf.nn.relu(x)
    if code == 3:
        return tf.nn.relu6(x)
    name = _ACTIVATION_NAMES.get(code, str(code))
    raise UnsupportedOperatorError(f"{ctx.where}: fused activation {name} is not supported")


def _as_tensor(value: Value) -> tf.Tensor:
    import tensorflow as tf

    return tf.constant(value) if isinstance(value, np.ndarray) else value


def _channels(ctx: _Context, x: tf.Tensor) -> int:
    channels = x.shape[-1]
    if channels is None:
        raise ConversionError(f"{ctx.where}: the input's channel count is unknown")
    return int(channels)


def _with_bias(ctx: _Context, y: tf.Tensor, position: int) -> tf.Tensor:
    import tensorflow as tf

    bias = ctx.optional_input(position)
    if bias is None:
        return y
    if not isinstance(bias, np.ndarray):
        raise ConversionError(f"{ctx.where}: the bias must be a constant")
    return tf.nn.bias_add(y, bias.astype(np.float32))


def _conv_2d(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (out, kh, kw, in)
    if kernel.shape[3] != _channels(ctx, x):
        # Grouped convolution: the schema allows it, the selfie models never use it.
        raise UnsupportedOperatorError(f"{ctx.where}: grouped convolution is not supported")
    y = tf.nn.conv2d(
        x,
        np.transpose(kernel, (1, 2, 3, 0)).astype(np.float32),  # -> (kh, kw, in, out)
        strides=[1, ctx.option("strideH", 1), ctx.option("strideW", 1), 1],
        padding=_padding(ctx),
        dilations=[1, ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1), 1],
    )
    return _activation(ctx, _with_bias(ctx, y, 2))


def _depthwise_conv_2d(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (1, kh, kw, in * multiplier)
    channels = _channels(ctx, x)
    if kernel.shape[0] != 1 or kernel.shape[3] % channels:
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for {channels} channels")
    # Output channel c * multiplier + m reads input channel c, in TFLite and in TensorFlow alike;
    # the multiplier comes from the shapes because old files leave depth_multiplier at 0.
    multiplier = kernel.shape[3] // channels
    y = tf.nn.depthwise_conv2d(
        x,
        kernel.reshape(kernel.shape[1], kernel.shape[2], channels, multiplier).astype(np.float32),
        strides=[1, ctx.option("strideH", 1), ctx.option("strideW", 1), 1],
        padding=_padding(ctx),
        dilations=[ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1)],
    )
    return _activation(ctx, _with_bias(ctx, y, 2))


def _transpose_conv_bias(ctx: _Context) -> tf.Tensor:
    """MediaPipe's Convolution2DTransposeBias: TRANSPOSE_CONV with a bias and NHWC input 0.

    Its options are the bytes of a TfLiteTransposeConvParams struct (int32 padding, stride_width,
    stride_height, native endianness: little on every platform MediaPipe targets), read by the
    kernel from custom_initial_data; not a flexbuffer like most custom ops' options.
    """
    import tensorflow as tf

    options = ctx.op.custom_options or b""
    if len(options) < 12:
        raise ConversionError(f"{ctx.where}: custom options {options!r} are too short")
    padding_code, stride_w, stride_h = struct.unpack_from("<3i", options)
    if padding_code not in _C_PADDING:
        raise UnsupportedOperatorError(f"{ctx.where}: padding code {padding_code} not supported")
    padding = _C_PADDING[padding_code]
    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (out, kh, kw, in)
    out_channels, kernel_h, kernel_w, in_channels = kernel.shape
    if in_channels != _channels(ctx, x):
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for input {x.shape}")
    height, width = int(x.shape[1]), int(x.shape[2])
    if padding == "SAME":
        out_h, out_w = height * stride_h, width * stride_w
    else:
        out_h = (height - 1) * stride_h + kernel_h
        out_w = (width - 1) * stride_w + kernel_w
    y = tf.nn.conv2d_transpose(
        x,
        np.transpose(kernel, (1, 2, 0, 3)).astype(np.float32),  # -> (kh, kw, out, in)
        output_shape=tf.stack([tf.shape(x)[0], out_h, out_w, out_channels]),
        strides=[1, stride_h, stride_w, 1],
        padding=padding,
    )
    y = tf.ensure_shape(y, [None, out_h, out_w, out_channels])
    return _with_bias(ctx, y, 2)


def _binary(function: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable[[_Context], Value]:
    def implementation(ctx: _Context) -> tf.Tensor:
        return _activation(ctx, function(_as_tensor(ctx.input(0)), _as_tensor(ctx.input(1))))

    return implementation


def _add(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.add(a, b)


def _mul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.multiply(a, b)


def _relu(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    return tf.nn.relu(ctx.input(0))


def _hard_swish(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    x = ctx.input(0)
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # TFLite's definition: x * relu6(x + 3) / 6


def _logistic(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    return tf.sigmoid(ctx.input(0))


def _average_pool_2d(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    y = tf.nn.avg_pool2d(
        ctx.input(0),
        ksize=[1, ctx.option("filterHeight"), ctx.option("filterWidth"), 1],
        strides=[1, ctx.option("strideH"), ctx.option("strideW"), 1],
        padding=_padding(ctx),  # SAME averages over the valid cells only, like TFLite
    )
    return _activation(ctx, y)


def _mean(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    x = ctx.input(0)
    axes = [int(a) % x.shape.rank for a in np.atleast_1d(ctx.constant(1))]
    if 0 in axes:
        # Averaging over the batch would mix frames once the batch is more than one frame.
        raise UnsupportedOperatorError(f"{ctx.where}: a mean over the batch axis is not supported")
    return tf.reduce_mean(x, axis=axes, keepdims=bool(ctx.option("keepDims", False)))


def _resize_bilinear(ctx: _Context) -> tf.Tensor:
    import tensorflow as tf

    size = ctx.constant(1).astype(np.int32)
    return tf.raw_ops.ResizeBilinear(
        images=ctx.input(0),
        size=size,
        align_corners=bool(ctx.option("alignCorners", False)),
        half_pixel_centers=bool(ctx.option("halfPixelCenters", False)),
    )


def _dequantize(ctx: _Context) -> np.ndarray:
    source = ctx.graph.tensors[ctx.op.inputs[0]]
    value = ctx.input(0)
    if not isinstance(value, np.ndarray) or source.dtype != np.dtype("<f2"):
        # The selfie models only store float16 weights; int8 weights need their scales applied.
        raise UnsupportedOperatorError(
            f"{ctx.where}: only float16 constants can be dequantized, not {source.name!r}"
        )
    return value.astype(np.float32)  # done once here, so the graph holds float32 constants


_BUILTIN_OPERATORS: dict[str, Callable[[_Context], Value]] = {
    "ADD": _binary(_add),
    "AVERAGE_POOL_2D": _average_pool_2d,
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "DEQUANTIZE": _dequantize,
    "HARD_SWISH": _hard_swish,
    "LOGISTIC": _logistic,
    "MEAN": _mean,
    "MUL": _binary(_mul),
    "RELU": _relu,
    "RESIZE_BILINEAR": _resize_bilinear,
}
_CUSTOM_OPERATORS: dict[str, Callable[[_Context], Value]] = {
    TRANSPOSE_CONV_BIAS: _transpose_conv_bias,
}


def supported_operators() -> list[str]:
    return sorted(_BUILTIN_OPERATORS) + [f"CUSTOM {name}" for name in sorted(_CUSTOM_OPERATORS)]


def _implementation(op: TFLiteOperator) -> Callable[[_Context], Value]:
    if op.custom_code is not None:
        if op.custom_code in _CUSTOM_OPERATORS:
            return _CUSTOM_OPERATORS[op.custom_code]
        raise UnsupportedOperatorError(
            f"TFLite custom operator {op.custom_code!r} is not supported by the converter"
        )
    if op.name in _BUILTIN_OPERATORS:
        return _BUILTIN_OPERATORS[op.name]
    raise UnsupportedOperatorError(
        f"TFLite operator {op.name} (builtin code {op.builtin_code}) "
        "is not supported by the converter"
    )


# --- the model ----------------------------------------------------------------------------------


def check_model(graph: TFLiteGraph, spec: ModelSpec) -> None:
    """Fails before any tracing when the graph is not a model this converter can rebuild."""
    for op in graph.operators:
        _implementation(op)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConversionError(
            f"expected one input and one output, found {len(graph.inputs)} and {len(graph.outputs)}"
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


def _run_graph(graph: TFLiteGraph, spec: ModelSpec, frames: tf.Tensor) -> tf.Tensor:
    """The model's operators applied to uint8 frames (N, H, W, 3): float32 (N, H, W)."""
    import tensorflow as tf

    pixels = tf.cast(frames, tf.float32) * np.float32(spec.input_scale)
    if spec.input_offset:  # skipped at 0 so the input is bit-identical to the engine's
        pixels += np.float32(spec.input_offset)
    values: dict[int, Value] = {
        index: tensor.data for index, tensor in enumerate(graph.tensors) if tensor.data is not None
    }
    values[graph.inputs[0]] = pixels
    for op in graph.operators:
        ctx = _Context(graph, values, op)
        with tf.name_scope(f"op{op.index:03d}_{op.name.lower()}"):
            result = _implementation(op)(ctx)
        if len(op.outputs) != 1:
            raise ConversionError(f"{ctx.where} has {len(op.outputs)} outputs; expected one")
        expected = graph.tensors[op.outputs[0]]
        actual = tuple(result.shape)
        # TFLite records every activation's shape: a mismatch means an operator was misread.
        if actual[1:] != expected.shape[1:] or len(actual) != len(expected.shape):
            raise ConversionError(
                f"{ctx.where} gives shape {actual}, TFLite says {expected.shape} "
                f"for {expected.name!r}"
            )
        values[op.outputs[0]] = result
    alpha = values[graph.outputs[0]]
    return tf.squeeze(_as_tensor(alpha), axis=-1)


def build_module(spec: ModelSpec, tflite_model: bytes | Path) -> tf.Module:
    """A tf.Module whose __call__ maps uint8 frames (N, H, W, 3) to float32 alpha (N, H, W).

    `serving` is the same function returning {"alpha": ...}, for the SavedModel signature.
    Raises UnsupportedOperatorError for an operator the converter does not know.
    """
    import tensorflow as tf

    graph = read_tflite(tflite_model)
    check_model(graph, spec)
    frames_spec = tf.TensorSpec(
        [None, spec.input_height, spec.input_width, 3], tf.uint8, name=INPUT_NAME
    )

    class SegmentationModel(tf.Module):
        @tf.function(input_signature=[frames_spec])
        def __call__(self, frames: tf.Tensor) -> tf.Tensor:
            return _run_graph(graph, spec, frames)

        @tf.function(input_signature=[frames_spec])
        def serving(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_NAME: self(frames)}

    module = SegmentationModel(name=spec.name.replace("-", "_"))
    module.__call__.get_concrete_function()  # trace now, so conversion errors surface here
    return module


def convert_to_savedmodel(spec: ModelSpec, tflite_path: Path, out_dir: Path) -> Path:
    """Converts the TFLite file into a SavedModel at out_dir and returns out_dir.

    Signature 'serving_default': input `frames` uint8 (N, H, W, 3), output `alpha` float32
    (N, H, W); tf.saved_model.load(out_dir)(frames) gives the alpha tensor directly.
    """
    import tensorflow as tf

    module = build_module(spec, Path(tflite_path))
    out_dir = Path(out_dir)
    tf.saved_model.save(
        module,
        str(out_dir),
        signatures={SIGNATURE_KEY: module.serving.get_concrete_function()},
    )
    return out_dir


def savedmodel_path(spec: ModelSpec, model_dir: Path) -> Path:
    """Where the converted model is cached: keyed by the source file's registered sha256 and
    the converter's version, so that a changed converter never serves a stale conversion."""
    return Path(model_dir) / f"{spec.name}-{spec.sha256[:16]}-v{CONVERTER_VERSION}.savedmodel"


def ensure_savedmodels(
    specs: Iterable[ModelSpec], model_dir: Path, fetch: bool
) -> dict[str, tuple[Path, Path]]:
    """Each model's checked TFLite file and its SavedModel, by name: the files fetched first
    (when `fetch`), then each one converted unless its conversion is cached."""
    specs = list(specs)
    paths = ensure_model_files(specs, model_dir, fetch=fetch)
    return {
        spec.name: (paths[spec.name], ensure_savedmodel(spec, paths[spec.name], model_dir))
        for spec in specs
    }


def ensure_savedmodel(spec: ModelSpec, tflite_path: Path, model_dir: Path) -> Path:
    """The cached SavedModel of spec, converting it first when absent.

    The conversion is written to a temporary directory next to the cache entry and renamed into
    place, so a reader never sees half a SavedModel, even when the converter is killed midway.
    """
    target = savedmodel_path(spec, model_dir)
    if (target / "saved_model.pb").is_file():
        return target
    actual = sha256_of(Path(tflite_path))
    if actual != spec.sha256:
        # The cache key is the registered checksum: converting another file would poison it.
        raise ModelFileError(
            f"model file {tflite_path} for {spec.name!r} has sha256 {actual}, "
            f"expected {spec.sha256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=model_dir))
    try:
        convert_to_savedmodel(spec, Path(tflite_path), partial)
        partial.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service user
        try:
            partial.rename(target)
        except OSError as error:
            # Another process may have finished the same conversion first: then use its copy.
            if not (target / "saved_model.pb").is_file():
                raise ConversionError(
                    f"could not move the converted model into {target}: {error}"
                ) from error
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.convert",
        description="Convert the registry's TFLite models to batchable TensorFlow SavedModels.",
    )
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument(
        "--no-fetch",
        action="store_true",
        help="fail on missing model files instead of fetching them from the package registry",
    )
    args = parser.parse_args(argv)
    try:
        converted = ensure_savedmodels(MODELS.values(), args.model_dir, fetch=not args.no_fetch)
        for name, (_tflite, savedmodel) in converted.items():
            print(f"{name}\t{savedmodel}")
    except (ConversionError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
