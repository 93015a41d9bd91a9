"""`make bench`: the engine alone against the whole service, in one run on this machine.

1. Engine alone: frames decoded on the codec threads and run through the engine in batches
   of `--streams` frames, decode of the next batch overlapping inference of this one: the
   ceiling of this machine for this model.
2. The whole service: a `segmentation-server` process, and `--streams` streams that each send
   their next frame as soon as an answer frees a slot (closed loop), masks at frame size.

Prints frames per second of both and their ratio (service / engine): the serving overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from loadtest.bench_deeplab import bench_deeplab
from loadtest.bench_quality import bench_quality
from loadtest.frames import video_sequence
from models.fetch import ensure_model_files
from models.registry import model_spec
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient
from service.codec import JpegCodec
from service.config import ServiceConfig
from service.engine import (
    TensorFlowEngine,
    TFLiteEngine,
    configure_tensorflow,
    create_engine,
    measure_ms_per_frame,
)


def bench_engine_batches(config: ServiceConfig) -> None:
    """Per-frame cost of each engine at each batch size, and batch 32 against batch 1."""
    from models.convert import ensure_savedmodel

    spec = model_spec(config.default_model)
    path = ensure_model_files([spec], Path(config.model_dir), config.fetch_models)[spec.name]
    savedmodel = ensure_savedmodel(spec, path, Path(config.model_dir))
    device = configure_tensorflow(config)
    sizes = (1, 2, 4, 8, 16, 32)
    engines = (
        TFLiteEngine(spec, path, config.engine_threads),
        TensorFlowEngine(spec, savedmodel, device, sizes),
    )
    print(f"\nengine cost per frame (ms), {spec.name} on {device}, median of 20 runs:")
    print("engine      " + "".join(f"{f'batch {size}':>10}" for size in sizes) + "   b32/b1")
    for engine in engines:
        engine.warm_up()
        costs = [measure_ms_per_frame(engine, size, runs=20) for size in sizes]
        print(
            f"{engine.name:<12}" + "".join(f"{cost:10.2f}" for cost in costs)
            + f"   {costs[-1] / costs[0]:6.2f}"
        )  # fmt: skip


def bench_engine(config: ServiceConfig, jpegs: list[bytes], batch: int, seconds: float) -> float:
    spec = model_spec(config.default_model)
    path = ensure_model_files([spec], Path(config.model_dir), config.fetch_models)[spec.name]
    engine = create_engine(config, spec, path)
    engine.warm_up()
    codec = JpegCodec(config.max_frame_bytes, config.max_frame_pixels)
    with ThreadPoolExecutor(config.decode_workers) as pool:

        def decode(start: int) -> np.ndarray:
            chunk = [jpegs[(start + i) % len(jpegs)] for i in range(batch)]
            decoded = pool.map(
                lambda j: codec.decode_for_model(j, spec.input_width, spec.input_height), chunk
            )
            return np.stack([d.pixels for d in decoded])

        frames = 0
        next_batch = pool.submit(decode, 0)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            pixels = next_batch.result()
            next_batch = pool.submit(decode, frames + batch)
            engine.infer(pixels)
            frames += batch
        return frames / (time.perf_counter() - started)


async def bench_service(
    target: str, jpegs: list[bytes], streams: int, window: int, seconds: float
) -> tuple[float, float, float]:
    """Frames per second, mean batch size and the share of frames dropped."""
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "other": 0}
    batch_sizes: list[int] = []

    async def one_stream(client: SegmentationClient, index: int) -> None:
        room = asyncio.Semaphore(window)

        async def frames():
            frame_id = 0
            while time.monotonic() < stop_at:
                await room.acquire()
                yield FrameToSend(frame_id, jpegs[(frame_id + index) % len(jpegs)])
                frame_id += 1

        async for response in client.stream(frames(), mask_encoding=pb.MASK_ENCODING_RAW_U8):
            room.release()
            if response.status == pb.StreamSegmentResponse.OK:
                counts["ok"] += 1
                batch_sizes.append(response.batch_size)
            else:
                counts["other"] += 1

    async with SegmentationClient(target) as client:
        await client.wait_until_serving()
        started = time.monotonic()
        await asyncio.gather(*(one_stream(client, n) for n in range(streams)))
        elapsed = time.monotonic() - started
    total = counts["ok"] + counts["other"]
    return counts["ok"] / elapsed, float(np.mean(batch_sizes)), counts["other"] / max(total, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    config = ServiceConfig.from_args([])
    jpegs = video_sequence(args.width, args.height, frames=24)
    mean_kb = np.mean([len(jpeg) for jpeg in jpegs]) / 1e3
    print(
        f"{args.width}x{args.height} JPEG frames (~{mean_kb:.0f} kB), model "
        f"{config.default_model}, engine {config.engine}, {os.cpu_count()} CPUs"
    )

    bench_engine_batches(config)
    bench_quality(config)
    bench_deeplab()
    print()
    engine_fps = bench_engine(config, jpegs, args.streams, args.seconds)
    print(
        f"engine alone (decode + inference, batches of {args.streams}): {engine_fps:7.1f} frames/s"
    )

    port = _free_port()
    server = subprocess.Popen(
        [Path(sys.executable).parent / "segmentation-server", "--address", f"127.0.0.1:{port}",
         "--metrics-port", "0", "--models", config.default_model, "--log-level", "WARNING"],
    )  # fmt: skip
    try:
        for window in (1, 2):
            fps, mean_batch, dropped = asyncio.run(
                bench_service(f"127.0.0.1:{port}", jpegs, args.streams, window, args.seconds)
            )
            print(
                f"service, {args.streams} streams, {window} frame(s) unanswered each: "
                f"{fps:7.1f} frames/s, mean batch {mean_batch:.1f}, dropped {dropped:.1%}, "
                f"service/engine = {fps / engine_fps:.2f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
