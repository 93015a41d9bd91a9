"""Starts `loadtest.gst_pipeline` in a process of its own, with GStreamer's Python bindings.

The bindings (`gi`, with GStreamer's overrides) are Debian's python3-gi and python3-gst-1.0,
built for the system's Python 3.11, which the virtual environment's Python of the same version
loads. Only `gi` goes on the path, not the rest of dist-packages, whose older packages would
shadow the environment's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent
DISCONT, DELTA_UNIT = 1 << 6, 1 << 13  # GstBufferFlags


def expected_flags(index: int) -> int:
    """The flags pushed on frame `index`, which must come out untouched: a discontinuity
    first, then a key frame every third frame."""
    return (DISCONT if index == 0 else 0) | (DELTA_UNIT if index % 3 else 0)


@cache
def gi_path() -> Path:
    """A folder holding only the system's `gi`."""
    found = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import gi, os, sys; print(os.path.dirname(gi.__file__)); print(sys.version_info[:2])"],
        capture_output=True, text=True,
    )  # fmt: skip
    if found.returncode != 0:
        raise RuntimeError(
            "GStreamer's Python bindings are missing (make test-system-packages): "
            + found.stderr.strip()
        )
    gi_folder, system_version = found.stdout.split("\n")[:2]
    if system_version != str(sys.version_info[:2]):
        raise RuntimeError(
            f"the system's gi is built for Python {system_version}, this is "
            f"{sys.version_info[:2]}: make the virtual environment with a Python of the same "
            "minor version (make PYTHON=python3.X setup)"
        )
    # One folder per checkout, git-ignored and reused: nothing is left outside the repository.
    folder = ROOT / ".cache" / "system-gi"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "gi"
    if not link.is_symlink() or str(link.readlink()) != gi_folder:
        link.unlink(missing_ok=True)
        link.symlink_to(gi_folder)
    return folder


async def run_pipeline(folder: Path, frames: np.ndarray, **spec: object) -> dict:
    """Runs `frames` (RGB, N x H x W x 3) through the spec's pipeline; the output bytes of the
    first branch land in `folder`/out.npy."""
    np.save(folder / "frames.npy", frames)
    spec = {"frames": str(folder / "frames.npy"), "save": str(folder / "out.npy"), **spec}
    (folder / "spec.json").write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.gst_pipeline", str(folder / "spec.json"),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(gi_path())},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), spec.get("timeout_s", 60) + 60)
    if process.returncode != 0:
        raise RuntimeError(f"the pipeline process failed: {err.decode()[-3000:]}")
    return json.loads(out)
