"""`python -m loadtest.bench.element`: what the `segmentation` GStreamer element costs its own
process per frame, beside what the service spends on the same frames, in one run.

1. The element's steps alone, on one thread (CPU time, 640x480): the frame's JPEG encode (from
   RGB, and from I420 planes), the JPEG mask's decode, the alpha merge (RGB to RGBA, I420 to
   A420), and a composite's decode.
2. Whole pipelines in a process of their own, fed like a camera (30 FPS): appsrc ! videoconvert
   ! segmentation ! appsink, and the same without the element. The process's CPU time with the
   element less without it, per frame, is the element's whole cost: its steps, its bookkeeping
   in Python, GStreamer's calls into it and the gRPC client. The server runs in a process of
   its own; its CPU time per frame over the same run is read from /proc.
3. The same with several streams in one process: one element per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
from PIL import Image
from turbojpeg import TJPF_GRAY, TJSAMP_GRAY, TurboJPEG

from loadtest import process_cpu
from loadtest.frames import video_sequence
from loadtest.gst_process import run_pipeline
from loadtest.local_server import ServerProcess
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_gstreamer.frames import FrameCodec, Layout, fill_with_alpha

WIDTH, HEIGHT = 640, 480
SERVER_FLAGS = ("--models", "selfie-general", "--engine", "tflite")
# The pipeline process's threads, by name: each appsrc's streaming thread (videoconvert, then
# the element's chain: the JPEG encode), each element's gRPC stream thread, each element's
# output thread (the mask's decode, the alpha merge, the push).
THREAD_GROUPS = {"streaming": "src", "grpc": "segment-stream", "output": "segmentation"}


def cpu_ms(step: Callable[[], object], runs: int = 200) -> float:
    """CPU time of this thread per call, after a few calls to warm up."""
    for _ in range(5):
        step()
    started = time.thread_time()
    for _ in range(runs):
        step()
    return (time.thread_time() - started) / runs * 1e3


def layout(format_: str) -> Layout:
    if format_ == "I420":
        luma, chroma = WIDTH * HEIGHT, WIDTH * HEIGHT // 4  # GStreamer's layout at 640x480
        strides, offsets = (WIDTH, WIDTH // 2, WIDTH // 2), (0, luma, luma + chroma)
        return Layout("I420", WIDTH, HEIGHT, strides, offsets, luma + 2 * chroma)
    channels = len(format_)
    return Layout(format_, WIDTH, HEIGHT, (WIDTH * channels,), (0,), WIDTH * HEIGHT * channels)


def bench_steps(rgb: np.ndarray, mask: np.ndarray, composite_jpeg: bytes) -> dict[str, float]:
    codec = FrameCodec()
    rgb_layout, rgba_layout = layout("RGB"), layout("RGBA")
    i420_layout = layout("I420")
    a420_layout = Layout(
        "A420", WIDTH, HEIGHT, (*i420_layout.strides, WIDTH), (*i420_layout.offsets,
        i420_layout.size), i420_layout.size + WIDTH * HEIGHT,
    )  # fmt: skip
    i420 = np.zeros(i420_layout.size, np.uint8)  # any content: the cost is the same
    codec.fill_from_jpeg(composite_jpeg, i420_layout, i420)
    frame = rgb.tobytes()
    mask_jpeg = pb.Mask(
        width=WIDTH, height=HEIGHT, encoding=pb.MASK_ENCODING_JPEG,
        data=TurboJPEG().encode(mask[:, :, None], 90, TJPF_GRAY, TJSAMP_GRAY),
    )  # fmt: skip
    rgba, a420 = np.empty(rgba_layout.size, np.uint8), np.empty(a420_layout.size, np.uint8)
    return {
        "encode, RGB frame (quality 85)": cpu_ms(lambda: codec.encode(rgb_layout, frame, 85)),
        "encode, I420 frame as planes": cpu_ms(lambda: codec.encode(i420_layout, i420, 85)),
        "decode, JPEG mask": cpu_ms(lambda: codec.decode_mask(mask_jpeg)),
        "alpha merge, RGB to RGBA": cpu_ms(
            lambda: fill_with_alpha(rgb_layout, frame, mask, rgba_layout, rgba)
        ),
        "alpha merge, I420 to A420": cpu_ms(
            lambda: fill_with_alpha(i420_layout, i420, mask, a420_layout, a420)
        ),
        "decode, composite into RGB": cpu_ms(
            lambda: codec.fill_from_jpeg(composite_jpeg, rgb_layout, rgba[: rgb_layout.size])
        ),
    }


def measure_pipeline(
    server: ServerProcess, frames: np.ndarray, count: int, streams: int, element: bool,
    properties: dict[str, object], input_format: str = "RGB",
) -> dict:  # fmt: skip
    """CPU of the pipeline's process and the server's, per frame, over one run."""
    before = process_cpu.sample(server.process.pid)
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(
            run_pipeline(
                Path(folder), frames, input_format=input_format, live=True, count=count,
                streams=streams, element=element, save="", timeout_s=count / 30 + 60,
                properties={"target": server.target, **properties},
            )
        )  # fmt: skip
    server_s = (process_cpu.sample(server.process.pid) - before).total_s
    frames_out = result["frames_out"]
    assert result["ended"] == "eos" and frames_out == count * streams, result
    threads = {group: 0.0 for group in THREAD_GROUPS}
    for name, seconds in result["thread_cpu_s"].items():
        group = next((g for g, prefix in THREAD_GROUPS.items() if name.startswith(prefix)), None)
        if group is not None:
            threads[group] += seconds / frames_out * 1e3
    return {
        "process_ms": result["cpu_s"] / frames_out * 1e3,
        "server_ms": server_s / frames_out * 1e3,
        "dropped": result.get("frames_dropped", 0),
        **threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="of each pipeline run")
    parser.add_argument("--streams", default="1,4", help="streams in one process, per run")
    args = parser.parse_args()
    count = int(args.seconds * 30)
    # A second of a camera panning over a photo of a person; runs cycle through it.
    frames = np.stack(
        [np.asarray(Image.open(io.BytesIO(jpeg))) for jpeg in video_sequence(WIDTH, HEIGHT, 30)]
    )
    with ServerProcess(*SERVER_FLAGS) as server:
        mask, composite = asyncio.run(_service_outputs(server.target, frames[0]))
        print(f"element steps alone, CPU-ms per frame at {WIDTH}x{HEIGHT}, one thread:")
        for name, ms in bench_steps(frames[0], mask, composite).items():
            print(f"  {name:<32} {ms:6.2f}")
        print(
            f"\nwhole pipelines at 30 FPS, {count} frames per stream, {WIDTH}x{HEIGHT}; "
            "CPU-ms per frame:"
        )
        print(
            "  element = the process with the element less without it; of which, by thread: "
            "streaming (less without it), grpc, output"
        )
        print(
            f"{'streams':>8} {'mode':>6} {'process':>8} {'element':>8} {'stream.':>8} "
            f"{'grpc':>6} {'output':>7} {'service':>8} dropped"
        )
        for streams in map(int, args.streams.split(",")):
            base = measure_pipeline(server, frames, count, streams, False, {})
            print(f"{streams:>8} {'none':>6} {base['process_ms']:8.2f}")
            for mode in ("alpha", "blur"):
                run = measure_pipeline(server, frames, count, streams, True, {"mode": mode})
                own = run["process_ms"] - base["process_ms"]
                streaming = run["streaming"] - base["streaming"]
                print(
                    f"{streams:>8} {mode:>6} {run['process_ms']:8.2f} {own:8.2f} "
                    f"{streaming:8.2f} {run['grpc']:6.2f} {run['output']:7.2f} "
                    f"{run['server_ms']:8.2f} {run['dropped']:>7}"
                )


async def _service_outputs(target: str, rgb: np.ndarray) -> tuple[np.ndarray, bytes]:
    """A real mask and a real composite of the frame, for the steps measured alone."""
    from segmentation_client import FrameToSend, SegmentationClient, mask_to_array

    codec = FrameCodec()
    jpeg = codec.encode(layout("RGB"), rgb.tobytes(), 85)
    async with SegmentationClient(target) as client:
        raw = pb.MASK_ENCODING_RAW_U8
        mask = mask_to_array((await client.segment(jpeg, mask_encoding=raw)).mask)

        async def one_frame() -> AsyncIterator[FrameToSend]:
            yield FrameToSend(0, jpeg)

        stream = client.stream(one_frame(), composite=pb.Composite(blur_radius=15))
        (composite,) = [answer.composited.jpeg async for answer in stream]
    return mask, composite


if __name__ == "__main__":
    main()
