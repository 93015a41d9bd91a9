"""The CPU image's steps run as the Dockerfile says, in a fresh virtual environment (no Docker
engine runs here): install the package, fetch and convert the models as its RUN step does,
start its ENTRYPOINT with its ENV, pass its HEALTHCHECK, serve a photo, stop on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from loadtest.local_server import free_port
from tests.photos import grace_hopper_jpeg
from tests.venvs import ROOT, build_wheel, clean_copy, installed_mb
from tests.venvs import fresh_venv as fresh_venv_with

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.cpu"


def dockerfile_instructions() -> dict[str, list[str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.setdefault(keyword, []).append(rest.strip())
    return instructions


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("image")
    # As the image does: the client distribution the server depends on, then the server.
    client = clean_copy(ROOT / "clients" / "python", folder / "segmentation-client")
    wheels = [build_wheel(client, folder / "client"), build_wheel(ROOT, folder / "server")]
    venv = fresh_venv_with(folder / "venv", wheels)
    print(f"\nsegmentation-service installed (with the client): {installed_mb(venv):.0f} MB")
    return venv


def test_the_image_steps_run_in_a_fresh_virtual_environment(
    fresh_venv: Path, tmp_path: Path
) -> None:
    instructions = dockerfile_instructions()
    environment = dict(
        pair.split("=", 1) for line in instructions["ENV"] for pair in shlex.split(line)
    )
    port, metrics_port = free_port(), free_port()
    environment |= {
        "SEGMENTATION_MODEL_DIR": str(tmp_path / "models"),  # the image's home, here a tmp dir
        "SEGMENTATION_ADDRESS": f"127.0.0.1:{port}",  # loopback only in tests
        "SEGMENTATION_METRICS_PORT": str(metrics_port),
    }
    env = {**os.environ, **environment, "PATH": f"{fresh_venv / 'bin'}:{os.environ['PATH']}"}

    fetch = next(step for step in instructions["RUN"] if "--fetch-models-only" in step)
    subprocess.run(shlex.split(fetch), env=env, check=True, capture_output=True, timeout=600)
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.suffix == ".tflite") == [
        "selfie_segmentation.tflite", "selfie_segmentation_landscape.tflite",
    ]  # fmt: skip
    assert list((tmp_path / "models").glob("*.savedmodel")), "converted at build time"

    entrypoint = json.loads(instructions["ENTRYPOINT"][0])
    healthcheck = json.loads(re.search(r"CMD (\[.*\])", instructions["HEALTHCHECK"][0]).group(1))
    healthcheck[healthcheck.index("--target") + 1] = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        entrypoint, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(healthcheck, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(0.5)
        photo = tmp_path / "hopper.jpg"
        photo.write_bytes(grace_hopper_jpeg())
        client = subprocess.run(
            ["segmentation-client", "--target", f"127.0.0.1:{port}", "segment", str(photo),
             "--out", str(tmp_path / "mask.png")],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert (tmp_path / "mask.png").stat().st_size > 1000
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "engine auto" in output and "SERVING" in output
