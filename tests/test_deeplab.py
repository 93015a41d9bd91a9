"""DeepLab v3 graphs of the model zoo's signature, built here (the official weights cannot be
downloaded), served through the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from models.deeplab import PASCAL_CLASSES, PERSON_CLASS, DeepLabLoadError, DeepLabModel
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import SegmentationClient, mask_to_array
from service.app import running_server
from tests.conftest import loopback_config
from tests.photos import encode_jpeg
from tests.reference import iou


def red_is_person(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A stand-in for DeepLab: class 15 (person) where the red channel is bright, else 0."""
    red = tf.cast(image[..., :1], tf.float32) / 255.0
    person = (red - 0.5) * 20.0
    others = tf.zeros_like(person) - 10.0
    logits = tf.concat(
        [-person] + [others] * (PERSON_CLASS - 1) + [person]
        + [others] * (PASCAL_CLASSES - PERSON_CLASS - 1),
        axis=-1,
    )  # fmt: skip
    return logits, tf.argmax(logits, axis=-1)


@pytest.fixture(scope="module")
def frozen_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="ImageTensor")])
    def deeplab(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits, predictions = red_is_person(image)
        return (
            tf.identity(predictions, name="SemanticPredictions"),
            tf.identity(logits, name="ResizeBilinear_3"),
        )

    graph_def = convert_variables_to_constants_v2(deeplab.get_concrete_function()).graph
    path = tmp_path_factory.mktemp("deeplab") / "frozen_inference_graph.pb"
    path.write_bytes(graph_def.as_graph_def().SerializeToString())
    return path


@pytest.fixture(scope="module")
def savedmodel_without_logits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    class DeepLab(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
        def serve(self, ImageTensor: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"SemanticPredictions": red_is_person(ImageTensor)[1]}

    module = DeepLab()
    path = tmp_path_factory.mktemp("deeplab") / "savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def red_square_photo() -> tuple[bytes, np.ndarray]:
    image = np.zeros((360, 480, 3), np.uint8)
    image[..., 2] = 200  # blue background
    image[80:280, 140:340] = (230, 40, 40)  # the "person"
    expected = np.zeros((360, 480), bool)
    expected[80:280, 140:340] = True
    return encode_jpeg(image, quality=95), expected


@pytest.mark.parametrize("form", ["frozen_graph", "savedmodel_without_logits"])
async def test_a_deeplab_graph_is_served_as_model_deeplabv3(
    form: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(form)
    config = loopback_config(models=("selfie-general",), deeplab_path=str(path))
    jpeg, expected = red_square_photo()
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        models = {m.name: m for m in await client.list_models()}
        assert models["deeplabv3"].engine == "deeplab-tensorflow"
        assert (models["deeplabv3"].input_width, models["deeplabv3"].input_height) == (513, 513)
        response = await client.segment(
            jpeg, model="deeplabv3", mask_encoding=pb.MASK_ENCODING_RAW_U8
        )
    mask = mask_to_array(response.mask)
    assert mask.shape == expected.shape
    assert iou(mask >= 128, expected) >= 0.97
    assert mask[100:260, 160:320].min() >= 250 and mask[:60].max() <= 5


def test_the_alpha_is_soft_from_logits_and_hard_from_class_ids(
    frozen_graph: Path, savedmodel_without_logits: Path
) -> None:
    gradient = np.zeros((32, 256, 3), np.uint8)
    gradient[..., 0] = np.arange(256, dtype=np.uint8)  # red rises from 0 to 255
    soft_model, hard_model = DeepLabModel(frozen_graph), DeepLabModel(savedmodel_without_logits)
    assert soft_model.has_logits and not hard_model.has_logits
    soft, hard = soft_model(gradient), hard_model(gradient)
    assert soft.shape == hard.shape == (32, 256)
    assert len(np.unique(soft.round(3))) > 20, "probabilities, not classes"
    assert np.all(np.diff(soft[0]) >= -1e-6), "more red, more person"
    assert set(np.unique(hard)) == {0.0, 1.0}
    assert hard[0, 100] == 0.0 and hard[0, 200] == 1.0


def test_a_graph_without_the_deeplab_tensors_is_refused(tmp_path: Path) -> None:
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.uint8, name="input")])
    def other(image: tf.Tensor) -> tf.Tensor:
        return tf.identity(image, name="output")

    path = tmp_path / "other.pb"
    path.write_bytes(other.get_concrete_function().graph.as_graph_def().SerializeToString())
    with pytest.raises(DeepLabLoadError, match="has no tensor ImageTensor:0"):
        DeepLabModel(path)
    with pytest.raises(DeepLabLoadError, match="not a frozen TensorFlow graph"):
        (tmp_path / "junk.pb").write_bytes(b"\x00junk" * 10)
        DeepLabModel(tmp_path / "junk.pb")
    with pytest.raises(DeepLabLoadError, match="no DeepLab model"):
        DeepLabModel(tmp_path / "missing.pb")
