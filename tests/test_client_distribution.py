"""The client distribution alone: its wheel, built from a clean copy of clients/python (the
stubs are generated while it builds), installed into a fresh virtual environment with nothing
else, streams real frames to a real server, and pulls in none of the server's packages."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import RunningService
from tests.helpers import ENGINE_INDEPENDENT
from tests.photos import video_frame_jpeg
from tests.venvs import ROOT, build_wheel, clean_copy, fresh_venv, installed_mb

# The server's heavy packages, none of which a caller needs.
SERVER_ONLY_MODULES = ("tensorflow", "ai_edge_litert", "cv2", "scipy", "PIL", "turbojpeg")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client")
    source = clean_copy(ROOT / "clients" / "python", folder / "segmentation-client")
    return fresh_venv(folder / "venv", [build_wheel(source, folder / "wheel")])


def test_the_client_venv_holds_none_of_the_servers_packages(client_venv: Path) -> None:
    found = subprocess.run(
        [client_venv / "bin" / "python", "-c",
         "import importlib.util, sys; "
         "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
         *SERVER_ONLY_MODULES],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert found == []
    print(f"\nsegmentation-client installed alone: {installed_mb(client_venv):.1f} MB")


@ENGINE_INDEPENDENT
async def test_the_client_wheel_alone_streams_frames_to_a_real_server(
    client_venv: Path, server: RunningService, tmp_path: Path
) -> None:
    sizes = [(640, 480), (320, 240), (640, 480)]
    files = []
    for n, (width, height) in enumerate(sizes):
        files.append(tmp_path / f"frame{n}.jpg")
        files[-1].write_bytes(video_frame_jpeg(width, height, shift=8 * n))
    result = await asyncio.to_thread(
        subprocess.run,
        [client_venv / "bin" / "segmentation-client", "--target", server.target, "stream",
         *map(str, files), "--fps", "30", "--out", str(tmp_path / "masks")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{len(files)} frames: {len(files)} ok" in result.stdout, result.stdout
    for file, size in zip(files, sizes, strict=True):
        mask = Image.open(tmp_path / "masks" / f"{file.stem}.png")
        assert mask.mode == "L" and mask.size == size
        person = np.asarray(mask) >= 128
        assert 0.1 < person.mean() < 0.9, "the photo's person, on its background"
