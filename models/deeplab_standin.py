"""Small frozen graphs shaped like the DeepLab model zoo's exports, for tests and `make bench`.

The official weights cannot be downloaded here, so these graphs copy what matters for serving
them: the export's batch-1 pre- and post-processing around a network that takes the normalised
513x513 image (`sub_7:0`) to logits (`ResizeBilinear_2:0` at 65x65, `ResizeBilinear_3:0` at
513x513), as `research/deeplab/export_model.py` writes them, `_output_shapes` included. The
network is tiny (a strided convolution, an atrous convolution, image pooling, a classifier)
with fixed random weights, plus a term that makes bright red regions "person" (class 15) so
that a served mask can be checked by eye.

Variants:
- `fixed_batch`: the network reshapes its features to a constant batch-1 shape, as some
  exports do; a batch of more than one frame fails in the network.
- `mixes_frames`: the network adds the batch's mean to each frame's features, so a batch of
  several frames runs without error but every frame's output depends on the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

Variant = Literal["zoo", "fixed_batch", "mixes_frames"]

INPUT_SIZE = 513
LOGITS_SIZE = 65  # output stride 8
CLASSES = 21
PERSON_CLASS = 15
_MEAN_PIXEL = 127.5
_CHANNELS = 8


def build_frozen_graph(variant: Variant = "zoo", seed: int = 0) -> bytes:
    """A serialised GraphDef of a zoo-shaped DeepLab stand-in."""
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.3) -> tf.Tensor:
        return tf.constant(rng.normal(0.0, scale, shape).astype(np.float32))

    graph = tf.Graph()
    with graph.as_default():
        image_tensor = v1.placeholder(tf.uint8, [1, None, None, 3], name="ImageTensor")
        image_size = tf.shape(image_tensor)[1:3]
        # The export's preprocessing: one image, padded bottom/right to 513 with the mean.
        image = tf.cast(tf.squeeze(image_tensor, axis=0), tf.float32)
        padded = tf.image.pad_to_bounding_box(
            image - _MEAN_PIXEL, 0, 0, INPUT_SIZE, INPUT_SIZE
        ) + tf.constant(_MEAN_PIXEL)
        batch = tf.expand_dims(padded, 0)
        scaled = tf.multiply(batch, 2.0 / 255.0, name="mul_1")
        inputs = tf.subtract(scaled, 1.0, name="sub_7")

        logits = _network(inputs, variant, weights)

        # The export's post-processing: logits at 65x65 and at 513x513, labels of one image
        # cropped to the image's size.
        small = tf.raw_ops.ResizeBilinear(
            images=logits, size=[LOGITS_SIZE, LOGITS_SIZE], align_corners=True,
            name="ResizeBilinear_2",
        )  # fmt: skip
        large = tf.raw_ops.ResizeBilinear(
            images=small, size=[INPUT_SIZE, INPUT_SIZE], align_corners=True,
            name="ResizeBilinear_3",
        )  # fmt: skip
        labels = tf.cast(tf.argmax(large, axis=3, name="ArgMax"), tf.float32)
        cropped = tf.slice(
            labels,
            tf.constant([0, 0, 0]),
            tf.concat([[1], image_size], axis=0),
            name="Slice",
        )
        tf.identity(tf.cast(cropped, tf.int32), name="SemanticPredictions")
    return graph.as_graph_def(add_shapes=True).SerializeToString()


def _network(inputs: tf.Tensor, variant: Variant, weights: Callable[..., tf.Tensor]) -> tf.Tensor:
    """sub_7 (N, 513, 513, 3) -> logits (N, 65, 65, 21)."""
    import tensorflow as tf

    features = tf.nn.relu(
        tf.nn.conv2d(inputs, weights(3, 3, 3, _CHANNELS), strides=2, padding="SAME")
    )  # 257x257
    features = tf.nn.avg_pool2d(features, 4, 4, padding="SAME")  # 65x65
    if variant == "fixed_batch":
        # Pixels as rows of one matrix, as a network with a dense layer has it. (A reshape to
        # the same rank with a batch of 1 would not do: grappler drops it as redundant.)
        pixels = tf.reshape(features, [1, LOGITS_SIZE * LOGITS_SIZE, _CHANNELS])
        pixels = tf.matmul(pixels, weights(1, _CHANNELS, _CHANNELS))
        features = tf.reshape(pixels, [1, LOGITS_SIZE, LOGITS_SIZE, _CHANNELS])
    if variant == "mixes_frames":
        features = features + tf.reduce_mean(features, axis=0, keepdims=True)
    # An atrous convolution: SpaceToBatchND / BatchToSpaceND around the convolution.
    atrous = tf.nn.relu(
        tf.compat.v1.nn.atrous_conv2d(
            features, weights(3, 3, _CHANNELS, _CHANNELS), rate=2, padding="SAME"
        )
    )
    # Image pooling: the mean over the image, a 1x1 convolution, a fixed-size resize.
    pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
    pooled = tf.nn.relu(tf.nn.conv2d(pooled, weights(1, 1, _CHANNELS, _CHANNELS), 1, "VALID"))
    pooled = tf.compat.v1.image.resize_bilinear(
        pooled, [LOGITS_SIZE, LOGITS_SIZE], align_corners=True
    )
    # Red minus blue of the image at 65x65: the "person" cue.
    colour = tf.nn.avg_pool2d(inputs, 8, 8, padding="SAME")
    redness = colour[..., :1] - colour[..., 2:3]
    person = np.zeros((1, 1, 1, CLASSES), np.float32)
    person[..., PERSON_CLASS] = 6.0
    person[..., 0] = -6.0
    features = tf.concat([atrous, pooled], axis=3)
    logits = tf.nn.conv2d(features, weights(1, 1, 2 * _CHANNELS, CLASSES, scale=0.2), 1, "VALID")
    return logits + redness * tf.constant(person)


def write_frozen_graph(path: Path, variant: Variant = "zoo", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_frozen_graph(variant, seed))
    return path
