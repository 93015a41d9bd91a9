"""Model files: fetched from the package registry, checked by sha256, clear errors otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.fetch import ModelFileError, checked_model_file, ensure_model_files, sha256_of
from models.registry import MODELS, model_spec


def test_the_registry_describes_each_model() -> None:
    general, landscape = model_spec("selfie-general"), model_spec("selfie-landscape")
    assert (general.input_height, general.input_width) == (256, 256)
    assert (landscape.input_height, landscape.input_width) == (144, 256)
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and spec.licence.startswith("Apache-2.0")
    with pytest.raises(KeyError, match="unknown model 'deeplab'"):
        model_spec("deeplab")


def test_cached_files_match_their_checksums(model_paths: dict[str, Path]) -> None:
    for name, path in model_paths.items():
        assert sha256_of(path) == MODELS[name].sha256


def test_fetches_the_files_from_the_wheel_on_the_package_registry(tmp_path: Path) -> None:
    paths = ensure_model_files(MODELS.values(), tmp_path, fetch=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    for name, path in paths.items():
        assert sha256_of(path) == MODELS[name].sha256


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    spec = model_spec("selfie-general")
    with pytest.raises(ModelFileError, match=r"selfie_segmentation\.tflite .* is missing"):
        ensure_model_files([spec], tmp_path, fetch=False)


def test_a_checksum_mismatch_is_an_error_naming_the_file(
    tmp_path: Path, model_paths: dict[str, Path]
) -> None:
    spec = model_spec("selfie-landscape")
    damaged = tmp_path / spec.file_name
    shutil.copy(model_paths[spec.name], damaged)
    with damaged.open("r+b") as file:
        file.seek(1000)
        file.write(b"\x00\x01\x02")
    with pytest.raises(ModelFileError) as caught:
        checked_model_file(spec, tmp_path)
    assert str(damaged) in str(caught.value) and spec.sha256 in str(caught.value)
