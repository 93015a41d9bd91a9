"""The CPU image users deploy, built with podman (`tests/podman.py`) and run as an operator and
as the Kubernetes manifests run it: its own HEALTHCHECK, masks through the published port equal
to a host-run server's, /metrics, uid 10001 writing only to /tmp on a read-only root, the models
inside (healthy with the network off), and a SIGTERM drain that ends open streams UNAVAILABLE
after answering every frame read, then exits 0 within the grace period."""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client import SegmentationClient, mask_to_array
from service.app import running_server
from tests import podman
from tests.cpu_image import (
    Container,
    as_kubernetes_runs_it,
    build_cpu_image,
    kubernetes_pod,
    published_port,
    start_container,
)
from tests.helpers import loopback_config
from tests.photos import astronaut_jpeg, grace_hopper_jpeg, video_frame_jpeg

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts"

# The first build on a machine makes the base image's stand-in and installs every package.
pytestmark = pytest.mark.timeout(1800)


_REPORT: list[str] = []


def report(line: str) -> None:
    """What an operator wants to know of the image: shown after these tests (even with -q)
    and kept in test-artifacts/container-image.txt."""
    _REPORT.append(line)


@pytest.fixture(scope="module", autouse=True)
def _show_report(pytestconfig: pytest.Config) -> Iterator[None]:
    _REPORT.clear()
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "container-image.txt").write_text("".join(f"{line}\n" for line in _REPORT))
    terminal = pytestconfig.pluginmanager.getplugin("terminalreporter")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if terminal is not None and capture is not None and _REPORT:
        with capture.global_and_fixture_disabled():  # past pytest's capture of the tests' output
            terminal.write_line("")
            for line in _REPORT:
                terminal.write_line(f"container image: {line}")


@pytest.fixture(scope="module")
def image() -> str:
    return build_cpu_image(report)


@pytest.fixture(scope="module")
def containers(image: str) -> Iterator[tuple[Container, Container]]:
    """Two containers at once: one run as the Kubernetes manifests run it, its ports published
    on loopback; one run as `podman run` with no options at all, its network off."""
    suffix = os.getpid()
    managed = start_container(
        image, f"segmentation-test-k8s-{suffix}", *as_kubernetes_runs_it(),
        "--publish=127.0.0.1::50051", "--publish=127.0.0.1::9090",
    )  # fmt: skip
    offline = start_container(image, f"segmentation-test-offline-{suffix}", "--network=none")
    try:
        managed.target = published_port(managed.name, 50051)
        managed.metrics_url = f"http://{published_port(managed.name, 9090)}/metrics"
        for container in (managed, offline):
            seconds = container.wait_until_healthy()
            report(f"{container.name}: HEALTHCHECK healthy (waited {seconds:.0f} s)")
        yield managed, offline
    finally:
        for container in (managed, offline):
            podman.podman("rm", "--force", "--time=0", container.name, check=False)


# Where the documents quote the CPU image's size: README's "the server's CPU image is N MB",
# and operations.md's row of Dockerfile.cpu in its table of images.
QUOTED_IMAGE_SIZES = {
    "README.md": re.compile(r"CPU\s+image\s+is (\d[\d,]*) MB"),
    "docs/operations.md": re.compile(r"^\| `Dockerfile\.cpu` \|.*?\| (\d[\d,]*) MB", re.M),
}


def test_the_documents_quote_the_size_of_the_image_built(image: str) -> None:
    built = podman.image_size_mb(image)
    for document, pattern in QUOTED_IMAGE_SIZES.items():
        match = pattern.search((ROOT / document).read_text())
        assert match, f"{document} no longer quotes the CPU image's size where this test looks"
        quoted = int(match.group(1).replace(",", ""))
        # Within 10%: a dependency's patch release moves the size a little, a new one does not.
        assert abs(quoted - built) <= 0.1 * built, (
            f"{document} says the CPU image is {quoted} MB; the image built is {built:.0f} MB"
        )


def test_the_image_serves_both_selfie_models_with_tflite_and_no_tensorflow(
    containers: tuple[Container, Container],
) -> None:
    managed, offline = containers
    for container in (managed, offline):
        logs = container.logs()
        for model in ("selfie-general", "selfie-landscape"):  # with no flags: engine auto
            assert f"model {model} ready on tflite (cpu)" in logs, logs
        assert "downloading" not in logs, "the models are in the image, none fetched at start"
    found = offline.exec(
        "python", "-c", "import importlib.util as u; print(u.find_spec('tensorflow'))"
    )
    assert found.strip() == "None", "the lean image carries no TensorFlow"


def test_the_process_runs_as_10001_and_writes_nowhere_but_tmp(
    containers: tuple[Container, Container],
) -> None:
    managed, offline = containers
    for container in (managed, offline):
        status = container.exec("cat", "/proc/1/status")
        assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status, re.M), status
        assert re.search(r"^Gid:\s+10001\s+10001\s+10001\s+10001$", status, re.M), status
    # Run plainly, the image's own permissions: uid 10001 owns nothing on the root filesystem,
    # and the only places it may write are the world-writable scratch folders.
    find = ["find", "/", "-xdev", "-writable", "-not", "-path", "/tmp/*"]
    # find exits 1 for the folders uid 10001 may not even read: its list is what counts.
    writable = podman.podman("exec", offline.name, *find, check=False).stdout
    assert set(writable.split()) <= {"/tmp", "/var/tmp", "/run/lock", "/var/lock"}, writable
    # As Kubernetes runs it: the root filesystem is read-only, /tmp (an emptyDir) is not.
    probe = (
        "import sys, tempfile\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        tempfile.TemporaryFile(dir=folder).close()\n"
        "        print(folder)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    folders = ["/", "/tmp", "/var/tmp", "/run/lock", "/opt/segmentation/models", "/usr/local"]
    assert managed.exec("python", "-c", probe, *folders).split() == ["/tmp"]
    assert managed.exec("python", "-c", probe, *folders, user="0").split() == ["/tmp"]


def test_metrics_answer_on_theirpublished_port(containers: tuple[Container, Container]) -> None:
    managed, _ = containers
    with urllib.request.urlopen(managed.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert response.status == 200
    assert 'segmentation_model_info{device="cpu",engine="tflite",model="selfie-general"}' in text


async def _paced_stream(target: str, frames: list[bytes]) -> list[np.ndarray]:
    """One StreamSegment call that sends each frame after the answer to the one before, so that
    none is dropped; returns the masks."""
    masks: list[np.ndarray] = []
    answered = asyncio.Event()

    async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
        yield pb.StreamSegmentRequest(config=pb.StreamConfig(mask_encoding=pb.MASK_ENCODING_RAW_U8))
        for frame_id, jpeg in enumerate(frames):
            answered.clear()
            yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=frame_id, jpeg=jpeg))
            await answered.wait()

    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment(requests(), timeout=60)
        async for response in call:
            assert response.status == pb.StreamSegmentResponse.OK, response
            masks.append(mask_to_array(response.mask))
            answered.set()
            if len(masks) == len(frames):
                call.cancel()
                break
    return masks


async def _masks(target: str, photos: list[bytes], frames: list[bytes]) -> list[np.ndarray]:
    async with SegmentationClient(target) as client:
        await client.wait_until_serving()
        segmented = [mask_to_array((await client.segment(photo)).mask) for photo in photos]
    return segmented + await _paced_stream(target, frames)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    return float((a & b).sum() / max(1, (a | b).sum()))


async def test_masks_through_the_published_port_match_a_host_run_server(
    containers: tuple[Container, Container],
) -> None:
    managed, _ = containers
    photos = [grace_hopper_jpeg(), astronaut_jpeg()]
    frames = [video_frame_jpeg(shift=shift) for shift in (0, 12, 24, 36)]
    from_container = await _masks(managed.target, photos, frames)
    async with running_server(loopback_config()) as host:  # the TFLite engine, as the image
        from_host = await _masks(host.target, photos, frames)
    assert len(from_container) == len(from_host) == len(photos) + len(frames)
    pairs = list(zip(from_container, from_host, strict=True))
    assert all(a.shape == b.shape for a, b in pairs)
    ious = [_iou(a, b) for a, b in pairs]
    largest = max(int(np.abs(a.astype(int) - b).max()) for a, b in pairs)
    report(
        f"masks, container against host (Segment x{len(photos)}, StreamSegment x{len(frames)}): "
        f"worst IoU {min(ious):.4f}, largest difference {largest}/255"
    )
    # The same model file and runtime: the masks were equal when this was written. Packages
    # that the image and the host resolved at different times may differ in the last bit of a
    # resize, which moves a few edge pixels and never the mask.
    assert min(ious) >= 0.99, ious


async def test_sigterm_drains_open_streams_then_exits_0_within_the_grace_period(
    containers: tuple[Container, Container],
) -> None:
    """Last: it stops the container."""
    managed, _ = containers
    pod, _ = kubernetes_pod()
    grace_s = pod["terminationGracePeriodSeconds"]
    sent: list[int] = []
    answered: list[int] = []
    to_send: asyncio.Queue[int] = asyncio.Queue()  # how many frames to send next, at once
    frame = video_frame_jpeg()

    async def at_30_fps() -> None:
        while True:
            to_send.put_nowait(1)
            await asyncio.sleep(1 / 30)

    async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
        yield pb.StreamSegmentRequest(config=pb.StreamConfig(mask_encoding=pb.MASK_ENCODING_RAW_U8))
        while True:
            for _ in range(await to_send.get()):
                sent.append(len(sent))
                yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=sent[-1], jpeg=frame))

    pacer = asyncio.create_task(at_30_fps())
    async with grpc.aio.insecure_channel(managed.target) as channel:
        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment(requests())
        sent_before_signal = answered_before_signal = 0
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for response in call:
                answered.append(response.frame_id)
                assert response.status in (
                    pb.StreamSegmentResponse.OK, pb.StreamSegmentResponse.DROPPED
                ), response  # fmt: skip
                if len(answered) == 3:
                    to_send.put_nowait(5)  # a burst: frames in flight when the signal comes
                    await asyncio.sleep(0.01)
                    sent_before_signal, answered_before_signal = len(sent), len(answered)
                    # Blocks the loop, so no frame is sent while podman delivers the signal.
                    podman.podman("kill", "--signal=TERM", managed.name)
                    signalled_at = time.monotonic()
    pacer.cancel()
    assert sent_before_signal, "the stream ended before SIGTERM"
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    assert "draining for shutdown" in (ended.value.details() or "")
    # Every frame read was answered, in order: the answers are the first frames sent, gapless,
    # at least all those sent before the signal (the server reads a frame as it arrives).
    assert answered == list(range(len(answered))), answered
    assert len(answered) >= sent_before_signal, (answered, sent_before_signal)
    exit_code = podman.podman("wait", managed.name, timeout=grace_s + 30).stdout.strip()
    stopped_s = time.monotonic() - signalled_at
    report(
        f"SIGTERM: {sent_before_signal} frames sent before it, "
        f"{len(answered) - answered_before_signal} answered after it, then UNAVAILABLE; "
        f"exit {exit_code} {stopped_s:.1f} s after the signal (grace {grace_s} s)"
    )
    assert exit_code == "0", managed.logs()
    assert stopped_s < grace_s
