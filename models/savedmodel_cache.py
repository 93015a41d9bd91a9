"""The cache of converted SavedModels: one directory per model, keyed by the source file's
registered sha256 and the converter's version, written whole or not at all."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from models import tensorflow_target
from models.fetch import ModelFileError, ensure_model_files, sha256_of
from models.registry import ModelSpec
from models.tflite_reader import ConversionError

# Raise when a change to the TensorFlow target changes what it produces.
CONVERTER_VERSION = 1


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
        tensorflow_target.convert_to_savedmodel(spec, Path(tflite_path), partial)
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
