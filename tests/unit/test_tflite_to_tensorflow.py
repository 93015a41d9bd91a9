"""The TFLite -> TensorFlow converter: same output as the interpreter, at any batch size."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from models import convert, tensorflow_target
from models.convert import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    UnsupportedOperatorError,
    check_model,
    convert_to_savedmodel,
    ensure_savedmodel,
    read_tflite,
    savedmodel_path,
)
from models.fetch import ModelFileError
from models.registry import MODELS, model_spec
from models.verify import TOLERANCE, photo_frames, verify


@pytest.fixture(scope="module")
def savedmodels(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both registry models converted into a fresh cache directory."""
    model_dir = tmp_path_factory.mktemp("converted")
    for name, spec in MODELS.items():
        ensure_savedmodel(spec, model_paths[name], model_dir)
    return model_dir


@pytest.mark.parametrize("name", sorted(MODELS))
def test_converted_model_matches_the_interpreter_at_batch_1_and_8(
    name: str, model_paths: dict[str, Path], savedmodels: Path
) -> None:
    spec = model_spec(name)
    results = verify(spec, model_paths[name], savedmodel_path(spec, savedmodels))
    assert [result.batch for result in results] == [1, 8]
    for result in results:
        assert result.max_abs_diff <= TOLERANCE, result


@pytest.mark.parametrize("name", sorted(MODELS))
def test_savedmodel_loads_and_takes_a_batch_of_3(name: str, savedmodels: Path) -> None:
    import tensorflow as tf

    spec = model_spec(name)
    loaded = tf.saved_model.load(str(savedmodel_path(spec, savedmodels)))
    frames = tf.constant(photo_frames(spec, 3))

    alpha = loaded.signatures[SIGNATURE_KEY](**{INPUT_NAME: frames})[OUTPUT_NAME]
    assert alpha.dtype == tf.float32
    assert tuple(alpha.shape) == (3, spec.input_height, spec.input_width)
    values = alpha.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0
    # Different photos give different masks: the frames of a batch are not mixed up.
    assert not np.allclose(values[0], values[1], atol=0.05)

    called = loaded(frames).numpy()  # the module is callable too, without the dict
    np.testing.assert_allclose(called, values, atol=1e-6)


def _cumsum_tflite() -> bytes:
    """A tiny real TFLite model with an operator the converter does not know (CUMSUM)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    def model(x: tf.Tensor) -> tf.Tensor:
        return tf.math.cumsum(x, axis=2)[..., :1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    return converter.convert()


def test_unknown_operator_is_named(tmp_path: Path) -> None:
    tflite = tmp_path / "cumsum.tflite"
    tflite.write_bytes(_cumsum_tflite())
    spec = dataclasses.replace(model_spec("selfie-general"), input_height=4, input_width=4)

    message = r"TFLite operator CUMSUM \(builtin code 128\) is not supported by the converter"
    with pytest.raises(UnsupportedOperatorError, match=message):
        convert_to_savedmodel(spec, tflite, tmp_path / "out.savedmodel")
    assert not (tmp_path / "out.savedmodel").exists()


def test_unknown_custom_operator_is_named(model_paths: dict[str, Path]) -> None:
    spec = model_spec("selfie-general")
    graph = read_tflite(model_paths[spec.name])
    renamed = tuple(
        dataclasses.replace(op, name="MaxPoolingWithArgmax2D", custom_code="MaxPoolingWithArgmax2D")
        if op.custom_code == convert.TRANSPOSE_CONV_BIAS
        else op
        for op in graph.operators
    )
    check_model(graph, spec)  # the real graph passes
    with pytest.raises(UnsupportedOperatorError, match="'MaxPoolingWithArgmax2D'"):
        check_model(dataclasses.replace(graph, operators=renamed), spec)


def test_ensure_savedmodel_uses_the_cache(
    model_paths: dict[str, Path], savedmodels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model_spec("selfie-landscape")

    def no_conversion(*args: object) -> Path:
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(tensorflow_target, "convert_to_savedmodel", no_conversion)
    path = ensure_savedmodel(spec, model_paths[spec.name], savedmodels)
    assert path == savedmodels / (
        f"selfie-landscape-{spec.sha256[:16]}-v{convert.CONVERTER_VERSION}.savedmodel"
    )
    assert (path / "saved_model.pb").is_file()
    assert not [name for name in os.listdir(savedmodels) if name.endswith(".partial")]


def test_ensure_savedmodel_refuses_a_file_with_another_checksum(
    model_paths: dict[str, Path], tmp_path: Path
) -> None:
    spec = model_spec("selfie-general")
    altered = tmp_path / spec.file_name
    altered.write_bytes(model_paths[spec.name].read_bytes() + b"\0")

    with pytest.raises(ModelFileError, match="sha256"):
        ensure_savedmodel(spec, altered, tmp_path)
    assert not savedmodel_path(spec, tmp_path).exists()
