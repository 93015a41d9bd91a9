"""The `segmentation` GStreamer element against real servers on loopback: pipelines built with
GStreamer's Python bindings (loadtest/gst_pipeline.py, in a process of their own) carry frames of a
real photo through the element into an appsink."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtest.gst_process import expected_flags, run_pipeline
from loadtest.local_server import free_port
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import SegmentationClient, mask_to_array
from segmentation_gstreamer import PLUGIN_PATH
from segmentation_gstreamer.frames import FrameCodec, Layout
from service.app import RunningService, running_server
from tests.helpers import ENGINE_INDEPENDENT, MAX_FRAMES_WITHOUT_MASK, loopback_config
from tests.photos import astronaut_rgb
from tests.reference import iou
from tests.venvs import ROOT, site_packages

FRAME_NS = 1_000_000_000 // 30
WIDTH, HEIGHT = 320, 240
GREEN = 0x00B140


def photo_frames(count: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A panning shot of the astronaut photo, RGB."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(np.roll(astronaut_rgb(), 6 * n, axis=1)).resize((width, height))
            )
            for n in range(count)
        ]
    )


def output_frames(folder: Path) -> np.ndarray:
    return np.load(folder / "out.npy")


def check_buffers_unchanged(result: dict, count: int) -> None:
    """Every frame came out once, in order, with its timestamps, duration and flags."""
    assert result["ended"] == "eos" and result["error"] is None, result
    assert result["pts"] == [n * FRAME_NS for n in range(count)]
    assert result["durations"] == [FRAME_NS] * count
    assert result["offsets"] == list(range(count))
    assert result["flags"] == [expected_flags(n) for n in range(count)]


async def service_masks(target: str, frames: np.ndarray, quality: int = 85) -> list[np.ndarray]:
    """The service's own mask of each frame, sent as the element encodes it."""
    height, width = frames.shape[1:3]
    layout = Layout("RGB", width, height, (width * 3,), (0,), width * height * 3)
    codec = FrameCodec()
    async with SegmentationClient(target) as client:
        return [
            mask_to_array(
                (await client.segment(
                    codec.encode(layout, frame.tobytes(), quality),
                    mask_encoding=pb.MASK_ENCODING_RAW_U8,
                )).mask
            )
            for frame in frames
        ]  # fmt: skip


@ENGINE_INDEPENDENT
async def test_alpha_is_the_services_mask_and_buffers_leave_in_order_untouched(
    server: RunningService, tmp_path: Path
) -> None:
    frames = photo_frames(12)
    result = await run_pipeline(
        tmp_path, frames, input_format="RGB", live=True,
        output_caps="video/x-raw,format=RGBA", properties={"target": server.target},
    )  # fmt: skip
    check_buffers_unchanged(result, len(frames))
    assert "format=(string)RGBA" in result["caps"]
    assert result["frames_dropped"] == 0
    out = output_frames(tmp_path).reshape(len(frames), HEIGHT, WIDTH, 4)
    assert np.array_equal(out[..., :3], frames), "the frame's own pixels, untouched"
    for alpha, mask in zip(out[..., 3], await service_masks(server.target, frames), strict=True):
        assert iou(alpha >= 128, mask >= 128) >= 0.99
    live, min_latency_ns, _ = result["latency_ns"]
    assert live and min_latency_ns >= FRAME_NS, "the element adds at least a frame's time"


@ENGINE_INDEPENDENT
@pytest.mark.parametrize(
    ("input_format", "mode", "output_format", "frame_bytes"),
    [
        ("BGR", "alpha", "BGRA", WIDTH * HEIGHT * 4),
        ("I420", "alpha", "A420", WIDTH * HEIGHT * 5 // 2),
        ("NV12", "mask", "GRAY8", WIDTH * HEIGHT),
        ("NV12", "blur", "NV12", WIDTH * HEIGHT * 3 // 2),
        ("RGB", "color", "RGB", WIDTH * HEIGHT * 3),
        ("I420", "image", "I420", WIDTH * HEIGHT * 3 // 2),
    ],
)
async def test_each_mode_negotiates_and_produces_its_format(
    server: RunningService, tmp_path: Path,
    input_format: str, mode: str, output_format: str, frame_bytes: int,
) -> None:  # fmt: skip
    frames = photo_frames(4)
    properties: dict[str, object] = {"target": server.target, "mode": mode}
    if mode == "image":
        background = tmp_path / "background.jpg"
        Image.fromarray(np.full((48, 64, 3), (200, 30, 30), np.uint8)).save(background)
        properties["image"] = str(background)
    if mode == "color":
        properties["color"] = GREEN
    result = await run_pipeline(tmp_path, frames, input_format=input_format, properties=properties)
    check_buffers_unchanged(result, len(frames))
    assert f"format=(string){output_format}" in result["caps"]
    out = output_frames(tmp_path)
    assert out.shape == (len(frames), frame_bytes)
    masks = await service_masks(server.target, frames)
    person = [mask >= 128 for mask in masks]
    if mode in ("alpha", "mask"):
        if output_format == "BGRA":
            alpha = out.reshape(len(frames), HEIGHT, WIDTH, 4)[..., 3]
        else:  # the last plane: A420's fourth, GRAY8's only one
            alpha = out[:, -WIDTH * HEIGHT :].reshape(len(frames), HEIGHT, WIDTH)
        for got, want in zip(alpha, person, strict=True):
            # YUV frames went through videoconvert before their JPEG, the reference did not.
            assert iou(got >= 128, want) >= (0.99 if output_format == "BGRA" else 0.97)
    if mode == "color":  # the background is the colour, the person is the photo
        rgb = out.reshape(len(frames), HEIGHT, WIDTH, 3).astype(int)
        background = rgb[0][~person[0]]
        assert np.abs(background - (0x00, 0xB1, 0x40)).mean() < 12
        assert np.abs(rgb[0][person[0]] - frames[0][person[0]]).mean() < 12


@ENGINE_INDEPENDENT
async def test_a_flushing_seek_discards_the_frames_in_flight_and_goes_on_from_the_seek(
    server: RunningService, tmp_path: Path
) -> None:
    count, seek_after, seek_to = 40, 6, 25
    result = await run_pipeline(
        tmp_path, photo_frames(count), input_format="I420", seek={"after": seek_after,
        "to_frame": seek_to}, properties={"target": server.target, "mode": "mask"},
    )  # fmt: skip
    assert result["ended"] == "eos" and result["error"] is None, result
    pts = result["pts"]
    after = pts.index(seek_to * FRAME_NS)
    # Before the seek: the frames from the start, in order; none was lost or came twice.
    assert after >= seek_after and pts[:after] == [n * FRAME_NS for n in range(after)]
    # After it: exactly the frames from the seek's position, to the end.
    assert pts[after:] == [n * FRAME_NS for n in range(seek_to, count)]


@ENGINE_INDEPENDENT
@pytest.mark.parametrize("unmasked", [False, True])
async def test_a_dropped_frame_goes_out_with_the_last_good_mask_or_unmasked(
    server: RunningService, tmp_path: Path, unmasked: bool
) -> None:
    # A burst with more frames in flight than the server keeps for a stream (2 in its
    # pipeline, 1 waiting): it answers the frames that newer ones replaced DROPPED.
    count = 16
    result = await run_pipeline(
        tmp_path, photo_frames(count), input_format="RGB", properties={
            "target": server.target, "mode": "mask", "max-in-flight": 12,
            "unmasked-when-dropped": str(unmasked).lower(),
        },
    )  # fmt: skip
    check_buffers_unchanged(result, count)
    masks = output_frames(tmp_path)
    dropped = result["frames_dropped"]
    print(f"\n{dropped} of {count} frames dropped")
    assert dropped >= 1, "the burst was not served in full"
    if unmasked:
        assert sum(bool((mask == 255).all()) for mask in masks) == dropped
    else:  # the panning photo's masks all differ: a repeated one is the last good mask
        repeats = sum(np.array_equal(a, b) for a, b in itertools.pairwise(masks))
        first_dropped = bool((masks[0] == 255).all())  # no good mask yet: unmasked
        assert repeats + first_dropped == dropped


async def test_a_stream_the_server_ends_for_silence_reopens_when_frames_come_again(
    tmp_path: Path,
) -> None:
    # A live source that stops for longer than the server waits for a silent stream.
    config = loopback_config(models=("selfie-general",), stream_idle_timeout_s=0.5)
    async with running_server(config) as service:
        result = await run_pipeline(
            tmp_path, photo_frames(10), input_format="RGB", live=True,
            pause={"after": 5, "seconds": 1.5}, properties={"target": service.target},
        )  # fmt: skip
    check_buffers_unchanged(result, 10)
    assert result["frames_dropped"] <= 1, "masks again once frames come"


@pytest.mark.timeout(120)
async def test_a_drain_mid_pipeline_costs_a_few_masks_and_the_pipeline_reaches_eos(
    tmp_path: Path,
) -> None:
    config = loopback_config(models=("selfie-general",), shutdown_grace_s=5)
    async with running_server(config) as first, running_server(config) as second:
        frames = photo_frames(75)  # 2.5 s at 30 FPS
        pipeline = asyncio.create_task(
            run_pipeline(
                tmp_path, frames, input_format="I420", live=True,
                properties={"target": f"ipv4:{first.target},{second.target}", "mode": "mask"},
            )
        )  # fmt: skip
        while not len(first.streams) + len(second.streams):
            assert not pipeline.done(), pipeline.result()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.7)
        (first if len(first.streams) else second).drain()
        result = await pipeline
    check_buffers_unchanged(result, len(frames))
    print(f"\ndrain: {result['frames_dropped']} frames without a mask, "
          f"{result['reconnects']} reconnects")  # fmt: skip
    assert result["reconnects"] >= 1
    assert result["frames_dropped"] <= MAX_FRAMES_WITHOUT_MASK


@pytest.mark.parametrize(
    ("refusal", "named"),
    [
        ("token", "UNAUTHENTICATED"),
        ("model", "NOT_FOUND"),
        ("no replica", "no replica answered"),
        ("image", "missing.jpg"),
    ],
)
async def test_a_refusal_or_an_unreadable_file_ends_in_a_bus_error_naming_the_reason(
    tmp_path: Path, refusal: str, named: str
) -> None:
    config = loopback_config(models=("selfie-general",), auth_token="right-token")
    async with running_server(config) as service:
        properties = {"target": service.target, "token": "right-token"}
        if refusal == "token":
            properties["token"] = "wrong-token"
        elif refusal == "model":
            properties["model"] = "no-such-model"
        elif refusal == "image":  # a background that cannot be read: no stream at all
            properties |= {"mode": "image", "image": str(tmp_path / "missing.jpg")}
        else:  # frames go on, answered DROPPED by the client, until it gives up
            properties |= {"target": f"127.0.0.1:{free_port()}", "give-up-after": 0.5}
        result = await run_pipeline(
            tmp_path, photo_frames(45), input_format="RGB", live=True,
            properties=properties,
        )  # fmt: skip
    assert result["ended"] == "error", result
    assert named in result["error"]["message"], result["error"]
    if refusal == "model":
        assert "no-such-model" in result["error"]["message"]


def test_gst_inspect_lists_the_element_and_its_properties(tmp_path: Path) -> None:
    # gst-inspect-1.0 runs the system's Python through gst-python's plugin loader: it reads the
    # element's packages from the virtual environment and the source folders (editable installs
    # live in .pth files, which PYTHONPATH does not read).
    python_path = [site_packages(Path(sys.prefix)), ROOT / "clients" / "python", PLUGIN_PATH.parent]
    result = subprocess.run(
        ["gst-inspect-1.0", "segmentation"],
        env={**os.environ, "GST_PLUGIN_PATH": str(PLUGIN_PATH),
             "GST_REGISTRY": str(tmp_path / "registry.bin"),
             "PYTHONPATH": ":".join(map(str, python_path))},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Person segmentation" in result.stdout
    for name in ("target", "model", "mode", "token", "ca-file", "cert-file", "key-file",
                 "smoothing", "edge-aware", "mask-encoding", "jpeg-quality", "max-in-flight",
                 "unmasked-when-dropped", "give-up-after", "frames-dropped"):  # fmt: skip
        assert re.search(rf"\n  {name}\s*:", result.stdout), name
    for caps in ("I420", "NV12", "RGBA", "GRAY8"):
        assert caps in result.stdout


# The element's parts that need no GStreamer: properties to stream settings, the output policy,
# and the frames in flight.


def element_values(**changes: object) -> dict:
    """Property values as the element holds them (its defaults), with `changes`."""
    defaults = {
        "target": "localhost:50051", "model": "", "token": "", "ca-file": "", "cert-file": "",
        "key-file": "", "mode": "alpha", "blur-radius": 15.0, "color": GREEN, "image": "",
        "jpeg-quality": 85, "mask-encoding": "jpeg", "smoothing": 0.0, "edge-aware": False,
        "answer-timeout": 2.0, "give-up-after": 15.0,
    }  # fmt: skip
    return defaults | changes


def test_properties_become_the_streams_settings(tmp_path: Path) -> None:
    from segmentation_gstreamer.settings import stream_settings

    (tmp_path / "ca.pem").write_bytes(b"PEM CA")
    values = element_values(
        **{"target": "dns:///segmentation:50051", "token": "t", "ca-file": str(tmp_path / "ca.pem"),
           "mode": "color", "color": 0x123456, "jpeg-quality": 70, "mask-encoding": "raw",
           "smoothing": 0.7, "answer-timeout": 0.5, "give-up-after": 3.0}
    )  # fmt: skip
    settings = stream_settings(values, "host/1/pipeline/segmentation")
    assert settings.target == "dns:///segmentation:50051"
    assert settings.stream_id == "host/1/pipeline/segmentation"
    assert settings.root_certificates == b"PEM CA" and settings.client_certificate is None
    assert settings.composite == pb.Composite(color_rgb=0x123456, jpeg_quality=70)
    assert settings.mask_encoding == pb.MASK_ENCODING_RAW_U8
    assert (settings.temporal_smoothing, settings.answer_timeout_s, settings.give_up_after_s) == (
        0.7, 0.5, 3.0,
    )  # fmt: skip
    assert stream_settings(element_values(), "s").composite is None  # alpha: a mask, no composite
    blur = stream_settings(element_values(mode="blur", **{"blur-radius": 9.0}), "s").composite
    assert blur == pb.Composite(blur_radius=9.0, jpeg_quality=85)


def test_a_background_file_that_cannot_be_read_is_an_os_error(tmp_path: Path) -> None:
    from segmentation_gstreamer.settings import stream_settings

    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        stream_settings(element_values(mode="image", image=str(tmp_path / "missing.jpg")), "s")


def test_a_property_outside_its_choices_is_named_with_the_choices() -> None:
    from segmentation_gstreamer.settings import choice_error

    assert choice_error("mode", "blur") is None
    assert choice_error("target", "anything") is None
    assert choice_error("mode", "sepia") == (
        "mode must be one of alpha, mask, blur, color, image; was 'sepia'"
    )
    assert "jpeg, raw" in choice_error("mask-encoding", "png")


def person_mask(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A mask of the photo's shape (its brighter half), as the service would send it raw."""
    gray = np.asarray(Image.fromarray(astronaut_rgb()).convert("L").resize((width, height)))
    return np.where(gray > 128, 255, 0).astype(np.uint8)


def answer(status: int, mask: np.ndarray | None = None) -> pb.StreamSegmentResponse:
    response = pb.StreamSegmentResponse(status=status)
    if mask is not None:
        response.mask.CopyFrom(
            pb.Mask(width=mask.shape[1], height=mask.shape[0],
                    encoding=pb.MASK_ENCODING_RAW_U8, data=mask.tobytes())
        )  # fmt: skip
    return response


GRAY = Layout("GRAY8", WIDTH, HEIGHT, (WIDTH,), (0,), WIDTH * HEIGHT)


@pytest.mark.parametrize("unmasked_when_dropped", [False, True])
def test_a_frame_not_segmented_gets_the_last_good_mask_or_none(unmasked_when_dropped: bool) -> None:
    from segmentation_gstreamer.output import OutputPolicy

    policy = OutputPolicy("mask", FrameCodec(), unmasked_when_dropped)
    out = np.empty(GRAY.size, np.uint8)
    dropped = answer(pb.StreamSegmentResponse.DROPPED)
    assert not policy.passes_through(dropped)
    policy.fill(dropped, GRAY, GRAY, None, out)
    assert (out == 255).all(), "no good mask yet: unmasked"
    mask = person_mask()
    ok = answer(pb.StreamSegmentResponse.OK, mask)
    assert not policy.passes_through(ok)
    policy.fill(ok, GRAY, GRAY, None, out)
    assert np.array_equal(out.reshape(HEIGHT, WIDTH), mask)
    assert not policy.passes_through(dropped)
    policy.fill(dropped, GRAY, GRAY, None, out)
    expected = np.full_like(mask, 255) if unmasked_when_dropped else mask
    assert np.array_equal(out.reshape(HEIGHT, WIDTH), expected)
    assert policy.frames_dropped == 2
    # A frame of another size never gets a mask of the old size.
    small = Layout("GRAY8", 16, 8, (16,), (0,), 128)
    assert (policy.alpha(None, small.height, small.width) == 255).all()


def test_a_composite_not_made_passes_the_input_through_and_is_counted() -> None:
    from segmentation_gstreamer.output import OutputPolicy

    policy = OutputPolicy("blur", FrameCodec(), False)
    assert policy.passes_through(answer(pb.StreamSegmentResponse.ERROR))
    assert not policy.passes_through(answer(pb.StreamSegmentResponse.OK))
    assert policy.frames_dropped == 1


def test_frames_leave_in_arrival_order_with_events_between_and_a_flush_empties() -> None:
    from segmentation_gstreamer.in_flight import InFlight, PendingFrame

    in_flight = InFlight(max_frames=2)
    first, second = (PendingFrame(n, buffer=None, layout=GRAY, out_layout=GRAY) for n in (0, 1))
    assert in_flight.add_frame(first)
    in_flight.add_event("caps")
    assert in_flight.add_frame(second)
    in_flight.answer(second, answer(pb.StreamSegmentResponse.OK))  # answered first, leaves second
    in_flight.answer(first, answer(pb.StreamSegmentResponse.DROPPED))
    assert [in_flight.take(), in_flight.take(), in_flight.take()] == [first, "caps", second]
    in_flight.add_frame(PendingFrame(2, None, GRAY, GRAY))
    in_flight.set_flushing(True)
    assert in_flight.take() is None
    assert not in_flight.add_frame(PendingFrame(3, None, GRAY, GRAY)), "not taken while flushing"
    in_flight.set_flushing(False)
    in_flight.fail(RuntimeError("refused"))
    assert in_flight.take() is None and not in_flight.add_frame(PendingFrame(4, None, GRAY, GRAY))
