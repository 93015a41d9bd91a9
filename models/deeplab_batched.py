"""The network inside a DeepLab frozen graph, run on a batch of frames.

The model zoo's exports take one image (`ImageTensor:0`, uint8 [1, H, W, 3]) and do their own
batch-1 pre- and post-processing around the network. Here the graph is imported again with its
normalised input (`sub_7:0`, float [1, 513, 513, 3]) replaced by a placeholder whose batch is
free (`input_map`), and only the network up to the logits is kept; the letterbox (the codec),
the normalisation `(2/255) * x - 1` and the softmax of the person class are done here instead.
Whether the network really is batch-free is not known from the graph: `models.deeplab_check`
compares it with the graph's own path before it serves.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from models.deeplab import (
    INPUT_SIZE,
    INPUT_TENSOR,
    PREDICTIONS_TENSOR,
    DeepLabLoadError,
    find_logits,
    person_probability,
)

if TYPE_CHECKING:
    import tensorflow as tf

# The normalised input in `deeplabv3_mnv2_pascal_trainval_2018_01_29` and its siblings.
NETWORK_INPUT_TENSOR = "sub_7:0"
_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _tensor_name(tensor: str) -> str:
    return tensor if ":" in tensor else f"{tensor}:0"


def find_network_input(graph_def: tf.compat.v1.GraphDef, given: str = "") -> str:
    """The normalised image the network starts from: `given`, else the zoo's `sub_7:0`, else
    the input of the first convolution downstream of `ImageTensor`."""
    nodes = {node.name: node for node in graph_def.node}
    if given:
        if _node_name(given) not in nodes:
            raise DeepLabLoadError(f"the graph has no input tensor {given}")
        return _tensor_name(given)
    if _node_name(NETWORK_INPUT_TENSOR) in nodes:
        return NETWORK_INPUT_TENSOR
    consumers: dict[str, list] = {}
    for node in graph_def.node:
        for name in node.input:
            if not name.startswith("^"):
                consumers.setdefault(_node_name(name), []).append(node)
    # Breadth first, so the convolution nearest the image wins.
    queue, seen = deque([_node_name(INPUT_TENSOR)]), set()
    while queue:
        for node in consumers.get(queue.popleft(), []):
            if node.op in _CONVOLUTIONS:
                return _tensor_name(node.input[0])
            if node.name not in seen:
                seen.add(node.name)
                queue.append(node.name)
    raise DeepLabLoadError(
        f"found neither {NETWORK_INPUT_TENSOR} nor a convolution after {INPUT_TENSOR}"
    )


class BatchedDeepLab:
    """A DeepLab graph's network on a batch: letterboxed uint8 (N, 513, 513, 3) frames in."""

    def __init__(
        self, graph_def: tf.compat.v1.GraphDef, input_tensor: str = "", logits_tensor: str = ""
    ) -> None:
        import tensorflow as tf

        if _node_name(PREDICTIONS_TENSOR) not in {node.name for node in graph_def.node}:
            raise DeepLabLoadError(f"the graph has no tensor {PREDICTIONS_TENSOR}")
        self.input_tensor = find_network_input(graph_def, input_tensor)
        logits = find_logits(graph_def, logits_tensor)
        if logits is None:
            raise DeepLabLoadError("the graph has no logits tensor (ResizeBilinear_3 or _2)")
        self.logits_tensor = logits

        # The export's shapes say batch 1; without them the import infers shapes again.
        free = tf.compat.v1.GraphDef()
        free.CopyFrom(graph_def)
        for node in free.node:
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]

        def import_network() -> None:
            frames = tf.compat.v1.placeholder(
                tf.float32, [None, INPUT_SIZE, INPUT_SIZE, 3], name="frames"
            )
            tf.compat.v1.import_graph_def(
                free, input_map={self.input_tensor: frames}, name="deeplab"
            )

        try:
            imported = tf.compat.v1.wrap_function(import_network, [])
            network = imported.prune(feeds="frames:0", fetches=f"deeplab/{self.logits_tensor}")
        except (ValueError, tf.errors.OpError) as error:
            raise DeepLabLoadError(
                f"the network does not import with a free batch: {error}"
            ) from None
        frames_spec = tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8)

        def logits_of(frames: tf.Tensor) -> tf.Tensor:
            # The graph's own normalisation (nodes mul_1 and sub_7), in the same float order.
            return network(tf.cast(frames, tf.float32) * (2.0 / 255.0) - 1.0)

        @tf.function(input_signature=[frames_spec])
        def alpha(frames: tf.Tensor) -> tf.Tensor:
            return person_probability(logits_of(frames), (INPUT_SIZE, INPUT_SIZE))

        @tf.function(input_signature=[frames_spec])
        def labels_and_alpha(frames: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            logits = logits_of(frames)
            if tuple(logits.shape[1:3]) != (INPUT_SIZE, INPUT_SIZE):
                logits = tf.compat.v1.image.resize_bilinear(
                    logits, (INPUT_SIZE, INPUT_SIZE), align_corners=True
                )
            return tf.argmax(logits, axis=-1), person_probability(logits, (INPUT_SIZE, INPUT_SIZE))

        self._tf = tf
        self._alpha = alpha
        self._labels_and_alpha = labels_and_alpha

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Person alpha, float32 (N, 513, 513)."""
        return self._alpha(self._tf.constant(frames)).numpy()

    def outputs(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (the argmax of the logits) and person alpha, each (N, 513, 513)."""
        labels, alpha = self._labels_and_alpha(self._tf.constant(frames))
        return labels.numpy(), alpha.numpy()
