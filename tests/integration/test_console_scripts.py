"""The two console scripts as a user runs them: a server process and the client CLI."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from loadtest.local_server import ServerProcess
from models.registry import model_spec
from tests.photos import astronaut_jpeg, grace_hopper_jpeg, video_frame_jpeg
from tests.reference import iou, reference_mask

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server_process() -> Iterator[tuple[str, int]]:
    server = ServerProcess()
    with server:
        yield server.target, server.metrics_port
    assert server.process.returncode == 0, server.output
    assert "shutting down" in server.output


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "segmentation-client", *args], capture_output=True, text=True, timeout=120
    )


def test_segment_writes_a_mask_png_that_covers_the_person(
    server_process: tuple[str, int], tmp_path: Path, model_paths: dict[str, Path]
) -> None:
    target, _ = server_process
    image = tmp_path / "astronaut.jpg"
    image.write_bytes(astronaut_jpeg())
    out = tmp_path / "mask.png"
    result = run_client("--target", target, "segment", str(image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    mask = Image.open(out)
    assert mask.mode == "L" and mask.size == (512, 512)
    person = np.asarray(mask) >= 128
    spec = model_spec("selfie-general")
    assert iou(person, reference_mask(image.read_bytes(), spec, model_paths[spec.name])) >= 0.99


def test_stream_writes_every_mask_and_a_summary(
    server_process: tuple[str, int], tmp_path: Path
) -> None:
    target, metrics_port = server_process
    files = []
    for n, jpeg in enumerate([grace_hopper_jpeg(), video_frame_jpeg(640, 480), astronaut_jpeg()]):
        files.append(tmp_path / f"frame{n}.jpg")
        files[-1].write_bytes(jpeg)
    out = tmp_path / "masks"
    result = run_client(
        "--target", target, "stream", *map(str, files), "--fps", "10", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frame0.png", "frame1.png", "frame2.png"]
    assert Image.open(out / "frame1.png").size == (640, 480)
    assert "3 frames: 3 ok, 0 dropped, 0 error" in result.stdout
    assert "latency ms: p50" in result.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        metrics = response.read().decode()
    ok_frames = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "segmentation_frames_total" and sample.labels["outcome"] == "ok"
    ]
    assert sum(ok_frames) >= 3, "the server counts the streamed frames"


def test_the_client_reports_a_refused_call_with_its_status(
    server_process: tuple[str, int], tmp_path: Path
) -> None:
    target, _ = server_process
    image = tmp_path / "broken.jpg"
    image.write_bytes(b"\xff\xd8 no more")
    result = run_client("--target", target, "segment", str(image), "--out", str(tmp_path / "m.png"))
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stderr and "corrupt_jpeg" in result.stderr
