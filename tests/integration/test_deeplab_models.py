"""DeepLab v3 graphs of the model zoo's signature, built here (the official weights cannot be
downloaded), served through the real server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from loadtest.bench.deeplab import bench_deeplab
from models.deeplab import (
    PASCAL_CLASSES,
    PERSON_CLASS,
    DeepLabLoadError,
    DeepLabModel,
    deeplab_spec,
)
from models.deeplab_batched import BatchedDeepLab, find_network_input
from models.deeplab_check import ALPHA_TOLERANCE, LABEL_MISMATCH_TOLERANCE
from models.deeplab_standin import Variant, write_frozen_graph
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import SegmentationClient, mask_to_array
from service.app import running_server
from service.engines.deeplab import DeepLabEngine
from service.frames.codec import JpegCodec, letterboxed, to_bytes
from service.frames.resize import resize
from tests.helpers import closed_loop_stream, loopback_config
from tests.photos import (
    astronaut_rgb,
    encode_jpeg,
    grace_hopper_rgb,
    video_frame_jpeg,
)
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


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[Variant, Path]:
    """Zoo-shaped frozen graphs: a batch-free network, one fixed at batch 1, one mixing frames."""
    folder = tmp_path_factory.mktemp("standins")
    variants: tuple[Variant, ...] = ("zoo", "fixed_batch", "mixes_frames")
    return {v: write_frozen_graph(folder / f"{v}.pb", v) for v in variants}


def test_the_batched_network_agrees_with_the_graphs_own_path_frame_by_frame(
    standins: dict[Variant, Path],
) -> None:
    own = DeepLabModel(standins["zoo"])
    batched = BatchedDeepLab(own.graph_def)
    photos = [
        astronaut_rgb(),
        grace_hopper_rgb(),
        astronaut_rgb()[:, 100:400],
        np.rot90(grace_hopper_rgb()),
    ]
    boxes = [letterboxed(photo, 513, 513) for photo in photos]
    labels, alphas = batched.outputs(np.stack([box for box, _ in boxes]))
    for (box, (width, height)), label, alpha in zip(boxes, labels, alphas, strict=True):
        # The graph's own path gets the image unpadded and pads it itself (with 127.5).
        own_labels, own_alpha = own.outputs(np.ascontiguousarray(box[:height, :width]))
        assert own_alpha.shape == (height, width)
        assert np.abs(alpha[:height, :width] - own_alpha).max() <= ALPHA_TOLERANCE
        assert np.mean(label[:height, :width] != own_labels) <= LABEL_MISMATCH_TOLERANCE
        assert 0.01 < np.mean(own_labels == PERSON_CLASS) < 0.99, "both person and not"


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("fixed_batch", "the batched network failed on a batch of 8: Input to reshape"),
        ("mixes_frames", "person probabilities differ from the graph's own"),
    ],
)
def test_a_network_that_is_not_batch_free_runs_one_frame_at_a_time(
    standins: dict[Variant, Path], variant: Variant, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.engines.deeplab"):
        engine = DeepLabEngine(deeplab_spec(), standins[variant], "cpu", (1, 2, 4, 8))
    assert not engine.batched and engine.batch_sizes == (1,) and engine.max_batch_size == 1
    assert "deeplabv3 runs one frame at a time: the batched network disagrees" in caplog.text
    assert reason in caplog.text
    assert engine.infer(np.zeros((2, 513, 513, 3), np.uint8)).shape == (2, 513, 513)


def test_tensor_names_can_be_given_and_missing_ones_mean_one_frame_at_a_time(
    standins: dict[Variant, Path], frozen_graph: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = deeplab_spec()
    # The 65x65 logits: upsampled here as the graph upsamples them.
    named = DeepLabEngine(spec, standins["zoo"], "cpu", (1, 2), "sub_7:0", "ResizeBilinear_2:0")
    assert named.batched and named.batch_sizes == (1, 2)
    with caplog.at_level(logging.WARNING, logger="service.engines.deeplab"):
        wrong = DeepLabEngine(spec, standins["zoo"], "cpu", (1, 2), "no_such_node:0")
        no_network = DeepLabEngine(spec, frozen_graph, "cpu", (1, 2))
    assert not wrong.batched and not no_network.batched
    assert "the graph has no input tensor no_such_node:0" in caplog.text
    assert "found neither sub_7:0 nor a convolution after ImageTensor:0" in caplog.text
    assert "--deeplab-input-tensor" in caplog.text


def test_without_the_zoos_name_the_input_is_that_of_the_first_convolution(
    standins: dict[Variant, Path],
) -> None:
    graph_def = DeepLabModel(standins["zoo"]).graph_def
    assert find_network_input(graph_def) == "sub_7:0"
    for node in graph_def.node:  # as in an export whose normalisation is numbered differently
        if node.name == "sub_7":
            node.name = "sub_2"
        node.input[:] = ["sub_2" if name == "sub_7" else name for name in node.input]
    assert find_network_input(graph_def) == "sub_2:0"
    assert BatchedDeepLab(graph_def).input_tensor == "sub_2:0"


@pytest.mark.parametrize("variant", ["zoo", "fixed_batch", "mixes_frames"])
async def test_streams_on_deeplab_are_answered_from_one_run_of_the_network_per_batch(
    standins: dict[Variant, Path], variant: Variant
) -> None:
    config = loopback_config(models=("selfie-general",), deeplab_path=str(standins[variant]))
    batched = variant == "zoo"
    jpegs = [
        [video_frame_jpeg(640, 480, shift=40 * (4 * s + f)) for f in range(5)] for s in range(4)
    ]
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        info = {m.name: m for m in await client.list_models()}["deeplabv3"]
        assert info.engine == "deeplab-tensorflow"
        assert info.batched == batched
        assert list(info.batch_sizes) == ([1, 2, 4, 8] if batched else [1])
        engine = service.pipelines["deeplabv3"].engine
        batches, runs = _count_batches_and_runs(engine)
        answers = await asyncio.gather(
            *(closed_loop_stream(client, stream, window=2, model="deeplabv3") for stream in jpegs)
        )
        sizes = service.metrics.registry.get_sample_value(
            "segmentation_batch_size_sum", {"model": "deeplabv3"}
        )
    responses = [r for stream in answers for r in stream]
    assert all(r.status == pb.StreamSegmentResponse.OK for r in responses)
    seen = {r.batch_size for r in responses}
    assert seen <= set(batches), "each answer's batch_size is a batch the network ran"
    if batched:
        assert max(seen) > 1
        assert len(runs) == len(batches), "one run of the network per batch"
        assert runs == [engine.padded_size(batch) for batch in batches]
    else:
        assert seen == {1} and set(batches) == {1}
    assert sizes == sum(batches) == len(responses)
    # Each mask is the graph's own batch-1 output for its frame, letterbox cut away.
    own = DeepLabModel(standins[variant])
    codec = JpegCodec(1 << 22, 1 << 22)
    for stream, stream_answers in zip(jpegs, answers, strict=True):
        for jpeg, response in zip(stream, stream_answers, strict=True):
            decoded = codec.decode_for_model(jpeg, 513, 513, fit="letterbox")
            width, height = decoded.content_size
            alpha = own(decoded.pixels)[:height, :width]
            expected = resize(to_bytes(alpha), 640, 480)
            difference = np.abs(mask_to_array(response.mask).astype(int) - expected).max()
            assert difference <= 255 * ALPHA_TOLERANCE + 1


def _count_batches_and_runs(engine: DeepLabEngine) -> tuple[list[int], list[int]]:
    """Records the frames of each batch the engine gets and of each run of its network."""
    batches: list[int] = []
    runs: list[int] = []
    infer, network = engine.infer, engine._batched

    def counted_infer(frames: np.ndarray) -> np.ndarray:
        batches.append(len(frames))
        return infer(frames)

    def counted_network(frames: np.ndarray) -> np.ndarray:
        runs.append(len(frames))
        return network(frames)

    engine.infer = counted_infer  # type: ignore[method-assign]
    if network is not None:
        engine._batched = counted_network  # type: ignore[assignment]
    return batches, runs


def test_the_benchmark_prints_the_cost_one_at_a_time_and_batched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    one_at_a_time, batched = bench_deeplab(batch=2, runs=1)
    assert one_at_a_time > 0 and batched > 0
    assert "one at a time" in capsys.readouterr().out
