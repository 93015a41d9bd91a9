"""The TensorFlow target: a TFLite model rebuilt as a TensorFlow graph with a free batch
dimension, saved as a SavedModel.

The TFLite files fix the batch at 1 and MediaPipe's custom transposed convolution has no
TensorFlow kernel, so a GPU could only run them one frame at a time through LiteRT. Here each
operator read by `models/tflite_reader.py` is re-expressed with TensorFlow ops that do not care
about the batch size (`models/tensorflow_operators.py`); this module walks the operators in the
model's order, checks each step's shape, and saves the result. It takes uint8 frames (N, H, W,
3) and returns the person probability (N, H, W); models/verify.py checks it against the
interpreter.

Only the operators the selfie models use are supported; any other one is an error that names
it, never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.registry import ModelSpec
from models.tensorflow_operators import OPERATORS, as_tensor
from models.tflite_operators import OperatorContext, check_shape, constant_values
from models.tflite_reader import ConversionError, TFLiteGraph, read_tflite

if TYPE_CHECKING:
    import tensorflow as tf

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "frames"
OUTPUT_NAME = "alpha"


def supported_operators() -> list[str]:
    return OPERATORS.names()


def check_model(graph: TFLiteGraph, spec: ModelSpec) -> None:
    """Fails before any tracing when the graph is not a model this converter can rebuild."""
    OPERATORS.check_model(graph, spec)


def _run_graph(graph: TFLiteGraph, spec: ModelSpec, frames: tf.Tensor) -> tf.Tensor:
    """The model's operators applied to uint8 frames (N, H, W, 3): float32 (N, H, W)."""
    import tensorflow as tf

    pixels = tf.cast(frames, tf.float32) * np.float32(spec.input_scale)
    if spec.input_offset:  # skipped at 0 so the input is bit-identical to the engine's
        pixels += np.float32(spec.input_offset)
    values = constant_values(graph)
    values[graph.inputs[0]] = pixels
    for op in graph.operators:
        ctx = OperatorContext(graph, values, op)
        with tf.name_scope(f"op{op.index:03d}_{op.name.lower()}"):
            result = OPERATORS.implementation(op)(ctx)
        if len(op.outputs) != 1:
            raise ConversionError(f"{ctx.where} has {len(op.outputs)} outputs; expected one")
        check_shape(op, graph, tuple(result.shape))
        values[op.outputs[0]] = result
    alpha = values[graph.outputs[0]]
    return tf.squeeze(as_tensor(alpha), axis=-1)


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
