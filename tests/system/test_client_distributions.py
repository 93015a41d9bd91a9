"""The client distributions alone. The Python wheel, built from a clean copy of clients/python
(the stubs are generated while it builds), installed into a fresh virtual environment with
nothing else, streams real frames to a real server, and pulls in none of the server's packages.
The Node package, packed by `npm pack` and installed in an empty folder, streams frames too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import RunningService
from tests.helpers import ENGINE_INDEPENDENT
from tests.integration.conformance.node_package import DRIVER as NODE_DRIVER
from tests.integration.conformance.node_package import built_node_client
from tests.integration.conformance.scenarios import check_answers, frame_files
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


@pytest.fixture(scope="module")
def node_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Node client as a caller gets it: `npm pack` in clients/node (which builds it), then
    `npm install` of that tarball in an empty folder."""
    folder = tmp_path_factory.mktemp("node-client")
    package = built_node_client()
    subprocess.run(
        ["npm", "pack", "--pack-destination", str(folder)], cwd=package, check=True,
        capture_output=True,
    )  # fmt: skip
    (tarball,) = folder.glob("segmentation-client-*.tgz")
    app = folder / "media-server"
    app.mkdir()
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", str(tarball)], cwd=app, check=True,
        capture_output=True,
    )  # fmt: skip
    return app / "node_modules" / "segmentation-client"


def test_the_node_package_ships_its_build_and_types_not_its_sources(node_install: Path) -> None:
    shipped = {str(path.relative_to(node_install)) for path in node_install.rglob("*")}
    assert {
        "dist/index.js",
        "dist/index.d.ts",
        "dist/proto/segmentation/v1/segmentation.proto",
    } <= shipped
    sources = [n for n in shipped if n.endswith(".ts") and not n.endswith(".d.ts")]
    assert sources == [], "TypeScript sources shipped"
    installed = [p for p in (node_install.parents[1]).rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in installed) / 1e6
    print(f"\nsegmentation-client for Node installed alone: {megabytes:.1f} MB")


@ENGINE_INDEPENDENT
async def test_the_node_package_alone_streams_frames_to_a_real_server(
    node_install: Path, server: RunningService, tmp_path: Path
) -> None:
    spec = {"target": server.target, "jpegs": frame_files(tmp_path), "frames": 20, "fps": 30}
    result = await asyncio.to_thread(
        subprocess.run, [*NODE_DRIVER, json.dumps(spec)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "SEGMENTATION_NODE_CLIENT": str(node_install)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    check_answers(answers, 20)
    assert answers["error"] is None
    assert [a[1] for a in answers["answers"]][-1] == "OK"


# Runs the README's example with 12 frames, and prints how many masks it was given.
EXAMPLE_RUN = """
const fs = require("node:fs");
const { removeBackground } = require("./example.js");
const [target, ...files] = process.argv.slice(1);
async function* frames() {
  for (const [frameId, file] of files.entries()) {
    yield { frameId, jpeg: fs.readFileSync(file) };
    await new Promise((resolve) => setTimeout(resolve, 100));  // a camera at 10 FPS
  }
}
let masks = 0;
removeBackground(target, "call-7", frames(), (frameId, jpeg) => {
  if (jpeg[0] === 0xff && jpeg[1] === 0xd8) masks += 1;  // a JPEG
}).then(() => console.log(`masks ${masks}`));
"""


@ENGINE_INDEPENDENT
async def test_the_node_readme_example_streams_frames(
    node_install: Path, server: RunningService, tmp_path: Path
) -> None:
    readme = (ROOT / "clients" / "node" / "README.md").read_text()
    (example,) = re.findall(r"```js\n(.*?)```", readme, re.S)
    assert len(example.strip().splitlines()) <= 12, "a ten-line example"
    app = node_install.parents[1]
    (app / "example.js").write_text(example)
    files = (frame_files(tmp_path) * 2)[:12]
    result = await asyncio.to_thread(
        subprocess.run, ["node", "-e", EXAMPLE_RUN, server.target, *files], cwd=app,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["masks", "12"]
