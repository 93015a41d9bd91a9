"""DeepLab v3 (PASCAL VOC), the model the product started from, from the user's own files.

Its weights cannot be fetched here: users download an official frozen graph from TensorFlow's
DeepLab model zoo (see the README) and pass it with `--deeplab-path`. Two forms load:

- a frozen GraphDef (`frozen_inference_graph.pb`): input `ImageTensor:0`, uint8 [1, H, W, 3];
  output `SemanticPredictions:0`, int [1, H, W] class ids;
- a SavedModel whose serving signature has the same input and output.

Person is PASCAL VOC class 15. Where the graph exposes its logits, the alpha is the softmax
probability of that class (soft edges); otherwise it is the hard class map.

`DeepLabModel` is the graph's own batch-1 path; `models.deeplab_batched` runs the network
inside a frozen graph on a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.registry import ModelSpec

if TYPE_CHECKING:
    import tensorflow as tf

NAME = "deeplabv3"
INPUT_TENSOR = "ImageTensor:0"
PREDICTIONS_TENSOR = "SemanticPredictions:0"
# The official graphs' logits, upsampled to the image before the argmax: tried in this order.
LOGITS_TENSORS = ("ResizeBilinear_3:0", "ResizeBilinear_2:0")
PERSON_CLASS = 15
PASCAL_CLASSES = 21
# The official graphs take images whose longer side is 513 and pad them to that square.
INPUT_SIZE = 513


class DeepLabLoadError(Exception):
    """The file is not a DeepLab graph of the expected signature."""


def deeplab_spec() -> ModelSpec:
    return ModelSpec(
        name=NAME,
        file_name="",
        sha256="",
        source=None,
        input_height=INPUT_SIZE,
        input_width=INPUT_SIZE,
        input_scale=1.0,  # the graph takes uint8 pixels and normalises them itself
        input_offset=0.0,
        licence="Apache-2.0 (TensorFlow DeepLab model zoo); weights supplied by the user",
        description="DeepLab v3 on PASCAL VOC, person = class 15",
        fit="letterbox",
    )


class DeepLabModel:
    """A loaded DeepLab graph: one uint8 frame (H, W, 3) in, person alpha (H, W) out."""

    def __init__(self, path: Path, logits_tensor: str = "") -> None:
        import tensorflow as tf

        path = Path(path)
        self.graph_def: tf.compat.v1.GraphDef | None = None  # of a frozen graph
        if path.is_dir():
            self._run, self.has_logits = _load_savedmodel(path)
        elif path.is_file():
            self.graph_def = read_frozen_graph(path)
            self._run, self.has_logits = _load_frozen_graph(path, self.graph_def, logits_tensor)
        else:
            raise DeepLabLoadError(f"no DeepLab model at {path}")
        self._tf = tf

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.outputs(frame)[1]

    def outputs(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's own class ids (H, W) and person alpha (H, W) of one frame."""
        predictions, logits = self._run(self._tf.constant(frame[None]))
        labels = predictions[0].numpy()
        if logits is None:
            return labels, (labels == PERSON_CLASS).astype(np.float32)
        height, width = labels.shape
        if tuple(logits.shape[1:3]) == (height, width):
            alpha = person_probability(logits, (height, width))[0]
        else:
            # The zoo's logits cover the image padded to 513x513; the image is its top left.
            alpha = person_probability(logits, (INPUT_SIZE, INPUT_SIZE))[0, :height, :width]
        return labels, alpha.numpy().astype(np.float32)


def person_probability(logits: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Softmax probability of a person (N, H, W) from logits (N, h, w, classes), upsampled to
    `size` as the zoo's graphs upsample their logits (bilinear, corners aligned)."""
    import tensorflow as tf

    if tuple(logits.shape[1:3]) != tuple(size):
        logits = tf.compat.v1.image.resize_bilinear(logits, size, align_corners=True)
    return tf.nn.softmax(logits, axis=-1)[..., PERSON_CLASS]


def read_frozen_graph(path: Path) -> tf.compat.v1.GraphDef:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise DeepLabLoadError(f"{path} is not a frozen TensorFlow graph: {error}") from None
    return graph_def


def find_logits(graph_def: tf.compat.v1.GraphDef, given: str = "") -> str | None:
    """The logits tensor: `given`, else the zoo's names, in order; None when none is there."""
    names = {node.name for node in graph_def.node}
    if given:
        if given.split(":")[0] not in names:
            raise DeepLabLoadError(f"the graph has no logits tensor {given}")
        return given
    return next((t for t in LOGITS_TENSORS if t.split(":")[0] in names), None)


def _load_frozen_graph(path: Path, graph_def: tf.compat.v1.GraphDef, logits_tensor: str):
    import tensorflow as tf

    names = {node.name for node in graph_def.node}
    for required in (INPUT_TENSOR, PREDICTIONS_TENSOR):
        if required.split(":")[0] not in names:
            raise DeepLabLoadError(f"{path} has no tensor {required}: not a DeepLab graph")
    logits = find_logits(graph_def, logits_tensor)

    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
    )
    fetches = [PREDICTIONS_TENSOR] + ([logits] if logits else [])
    pruned = wrapped.prune(feeds=INPUT_TENSOR, fetches=fetches)

    def run(frames: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        outputs = pruned(frames)
        return outputs[0], (outputs[1] if logits else None)

    return run, logits is not None


def _load_savedmodel(path: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise DeepLabLoadError(f"{path} has no serving_default signature")
    input_name = next(iter(signature.structured_input_signature[1]))
    outputs = signature.structured_outputs
    prediction_key = next(
        (k for k, spec in outputs.items() if spec.dtype.is_integer and spec.shape.rank == 3), None
    )
    if prediction_key is None:
        raise DeepLabLoadError(f"{path}'s signature has no [1, H, W] class-id output")
    logits_key = next(
        (
            k
            for k, spec in outputs.items()
            if spec.dtype.is_floating and spec.shape.rank == 4 and spec.shape[-1] == PASCAL_CLASSES
        ),
        None,
    )

    def run(frames: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        result = signature(**{input_name: frames})
        return result[prediction_key], (result[logits_key] if logits_key else None)

    return run, logits_key is not None
