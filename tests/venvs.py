"""Wheels built from this checkout, installed into fresh virtual environments."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel --no-deps` into the new folder `out`: what a release would publish for the
    project at `source`."""
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def clean_copy(source: Path, out: Path) -> Path:
    """The project at `source` as a fresh clone has it: no generated stubs, no build output."""
    return Path(
        shutil.copytree(
            source, out,
            ignore=shutil.ignore_patterns("*_pb2*", "__pycache__", "*.egg-info", "build"),
        )
    )  # fmt: skip


def fresh_venv(folder: Path, wheels: list[Path]) -> Path:
    """A virtual environment with nothing but `wheels` and what they depend on."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run(
        [folder / "bin" / "pip", "install", "-q", *map(str, wheels)],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def installed_mb(venv: Path) -> float:
    """What the packages take on disk, without the pip and setuptools every venv carries."""
    tools = ("pip", "setuptools", "_distutils_hack", "pkg_resources")
    total = 0
    for entry in site_packages(venv).iterdir():
        if entry.name.split("-")[0] in tools:
            continue
        files = [entry] if entry.is_file() else entry.rglob("*")
        total += sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())
    return total / 1e6
