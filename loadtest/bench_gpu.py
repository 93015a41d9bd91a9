"""The GPU figures, in one run of about five minutes on the GPU host:

1. the model's ms per frame at batch 1 to 256, float32 and float16 (CUDA graphs, on-device
   input), and float16's worst mask IoU against float32 on photos;
2. the GPU frame path's CPU-ms and GPU-ms per frame (a batch from JPEG bytes to answers), beside
   the CPU path's CPU-ms with the same engine, and whether nvJPEG rejects damaged frames;
3. one server process's answered frames/s at saturation, 640x480 and 1280x720, JPEG masks,
   under open-loop generators in processes of their own;
4. the calls held at 30 FPS under the objective (p99 <= 100 ms, <= 1% dropped), by bisection;
5. the same with several server processes on the one GPU.

Every figure is printed and appended to OUT/summary.txt and OUT/results.jsonl as it comes, so a
run cut short keeps what it measured. `--device cpu --quick` runs the whole thing on a CPU
with small sizes: a dry run that proves the script, not the figures.

    python -m loadtest.bench_gpu [--device cuda] [--out bench-gpu] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadtest.gpu_load import FPS, LoadRun, Servers, calls_held, run_load
from models.registry import model_spec


class Output:
    """Prints each line and appends it to summary.txt; records go to results.jsonl."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._summary = folder / "summary.txt"
        self._results = folder / "results.jsonl"

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        with self._summary.open("a") as file:
            file.write(text + "\n")

    def record(self, kind: str, **figures: object) -> None:
        with self._results.open("a") as file:
            file.write(json.dumps({"kind": kind, "time": time.time(), **figures}) + "\n")


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def model_costs(out: Output, args: argparse.Namespace) -> None:
    import torch

    from service.engines.torch_engine import TorchEngine, mask_iou, photo_check_frames

    spec = model_spec(args.model)
    out.line(f"\n## The model alone ({spec.name}, {args.device}): ms per frame by batch size")
    photos = photo_check_frames(spec)
    full_alpha = None
    for precision in args.precisions:
        engine = TorchEngine(spec, args.model_path, args.device, tuple(args.batches),
                             precision=precision, threads=args.threads)  # fmt: skip
        engine.warm_up()
        figures = {}
        for batch in args.batches:
            frames = torch.from_numpy(photos[np.arange(batch) % len(photos)]).to(args.device)
            engine.infer_on_device(frames)
            _synchronize(args.device)
            started = time.perf_counter()
            for _ in range(args.model_runs):
                engine.infer_on_device(frames)
            _synchronize(args.device)
            figures[batch] = (time.perf_counter() - started) * 1e3 / args.model_runs / batch
        alpha = engine.infer(photos)
        if precision == "float32":
            full_alpha = alpha
        worst = (
            min(mask_iou(f, h) for f, h in zip(full_alpha, alpha, strict=True))
            if full_alpha is not None
            else float("nan")
        )
        out.line(
            f"{precision:>8}: "
            + ", ".join(f"{batch}: {ms:.3f}" for batch, ms in figures.items())
            + f"  (worst mask IoU against float32 on photos: {worst:.4f})"
        )
        out.record("model", precision=precision, ms_per_frame=figures, worst_iou=worst)
    if full_alpha is not None and args.device != "cpu":
        # The CPU module matches LiteRT within 1e-4 (models.verify): CUDA against it.
        on_cpu = TorchEngine(spec, args.model_path, "cpu").infer(photos)
        diff = float(np.abs(on_cpu - full_alpha).max())
        out.line(f"float32 on {args.device} against float32 on the CPU: max abs diff {diff:.2e}")
        out.record("cuda_parity", max_abs_diff=diff)


def frame_path_costs(out: Output, args: argparse.Namespace) -> None:
    from loadtest.frames import video_sequence
    from service.engines.torch_engine import TorchEngine
    from service.frames.codec import JpegCodec, MaskEncoding
    from service.frames.cpu_path import CpuFramePath
    from service.frames.gpu_device import CpuFrameDevice, CudaFrameDevice
    from service.frames.gpu_path import GpuFramePath
    from service.frames.path import FrameJob
    from service.frames.requests import OutputRequest
    from service.frames.workers import WorkerThreads

    spec = model_spec(args.model)
    batch = args.path_batch
    engine = TorchEngine(spec, args.model_path, args.device, (batch,), threads=args.threads)
    device = CudaFrameDevice(args.device) if args.device.startswith("cuda") else CpuFrameDevice()
    codec = JpegCodec(max_frame_bytes=8 << 20, max_frame_pixels=4096 * 4096)
    workers = WorkerThreads(1, "bench-codec")
    paths = {"gpu": GpuFramePath(engine, codec, workers, device),
             "cpu": CpuFramePath(engine, codec, workers)}  # fmt: skip
    for path in paths.values():
        path.warm_up()
    out.line(f"\n## The frame path, batches of {batch} from JPEG to answer (JPEG masks)")
    request = OutputRequest(0, 0, MaskEncoding.JPEG)

    for resolution in args.resolutions:
        jpegs = video_sequence(*_size(resolution), frames=batch)
        jobs = [FrameJob(jpeg, request) for jpeg in jpegs]
        figures = {}
        for name, path in paths.items():
            asyncio.run(_through(path, jobs))
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            for _ in range(args.path_runs):
                asyncio.run(_through(path, jobs))
            frames = batch * args.path_runs
            figures[name] = {
                "cpu_ms": (time.process_time() - cpu_started) * 1e3 / frames,
                "wall_ms": (time.perf_counter() - wall_started) * 1e3 / frames,
            }
        out.line(
            f"{resolution}: GPU path {figures['gpu']['cpu_ms']:.2f} CPU-ms and "
            f"{figures['gpu']['wall_ms']:.2f} ms of wall (GPU-ms bound) per frame; CPU path "
            f"{figures['cpu']['cpu_ms']:.2f} CPU-ms per frame (same engine, one codec thread)"
        )
        out.record("frame_path", resolution=resolution, batch=batch, **figures)
        raw = OutputRequest(0, 0, MaskEncoding.RAW_U8)
        masks = {name: asyncio.run(_masks(path, [FrameJob(j, raw) for j in jpegs]))
                 for name, path in paths.items()}  # fmt: skip
        # Frames whose person covers under 5% of the ideal mask are left out: an IoU of a few
        # pixels says nothing (the panning window leaves the person in some frames).
        ideal = _ideal_masks(jpegs, spec, args.model_path)
        kept = [n for n, mask in enumerate(ideal) if mask.mean() >= 0.05]
        ious = {name: [_iou(found[n], ideal[n]) for n in kept] for name, found in masks.items()}
        out.line(
            f"{resolution}: mask IoU against the ideal path (full decode, antialiased stretch, "
            f"float32 on the CPU), {len(kept)} frames showing a person: GPU path worst "
            f"{min(ious['gpu']):.4f} mean {np.mean(ious['gpu']):.4f}; CPU path worst "
            f"{min(ious['cpu']):.4f} mean {np.mean(ious['cpu']):.4f}"
        )
        out.record("path_iou", resolution=resolution, frames=len(kept), iou=ious)
    _damaged_frames(out, paths["gpu"], codec, jpegs[0])
    workers.shutdown()


async def _through(path: object, jobs: list) -> list:
    """The jobs as one batch from JPEG to answer: each frame's (mask, composite)."""
    prepared = [await path.prepare(job) for job in jobs]
    results = await asyncio.to_thread(path.run_batch, prepared)
    return [
        await path.finish(job, item, result)
        for job, item, result in zip(jobs, prepared, results, strict=True)
    ]


async def _masks(path: object, jobs: list) -> list[np.ndarray]:
    return [
        np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width) >= 128
        for mask, _ in await _through(path, jobs)
    ]


def _ideal_masks(jpegs: list[bytes], spec: object, model_path: Path) -> list[np.ndarray]:
    """tests/reference.py's masks, with the torch module on the CPU (which matches LiteRT
    within 1e-4) where LiteRT is not installed."""
    import io

    from PIL import Image

    from service.engines.torch_engine import TorchEngine

    engine = TorchEngine(spec, model_path, "cpu")
    masks = []
    for jpeg in jpegs:
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        pixels = image.resize((spec.input_width, spec.input_height), Image.BILINEAR)
        alpha = engine.infer(np.asarray(pixels)[None])[0]
        upscaled = np.asarray(Image.fromarray(alpha, "F").resize(image.size))
        masks.append(upscaled >= 0.5)
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _damaged_frames(out: Output, path: object, codec: object, jpeg: bytes) -> None:
    """tests/test_fuzz.py's kinds of damage: does the device's decoder reject what
    libjpeg-turbo rejects (each alone, and in a batch with a good frame)?"""
    rng = np.random.default_rng(0)
    damaged = {f"truncated to {n}%": jpeg[: len(jpeg) * n // 100] for n in (30, 60, 90, 99)}
    for _ in range(4):
        flipped = bytearray(jpeg)
        position = int(rng.integers(len(jpeg) // 4, len(jpeg)))
        flipped[position] ^= 1 << int(rng.integers(8))
        damaged[f"bit flipped at {position}"] = bytes(flipped)
    damaged["zeros after 40%"] = jpeg[: len(jpeg) * 2 // 5] + bytes(len(jpeg) * 3 // 5)
    agreed = 0
    for what, data in damaged.items():
        try:
            codec.decode_for_model(data, 256, 256)
            cpu_rejects = False
        except Exception:
            cpu_rejects = True
        device_rejects = not hasattr(path.decode([data])[0], "shape")
        in_batch = path.decode([jpeg, data])
        good_kept = hasattr(in_batch[0], "shape")
        agreed += cpu_rejects == device_rejects
        out.line(f"  {what:<24} libjpeg-turbo {'rejects' if cpu_rejects else 'decodes'}, "
                 f"device {'rejects' if device_rejects else 'decodes'}; the good frame beside "
                 f"it {'decoded' if good_kept else 'LOST'}")  # fmt: skip
        out.record("damaged", what=what, cpu_rejects=cpu_rejects,
                   device_rejects=device_rejects, good_kept=good_kept)  # fmt: skip
    out.line(f"damaged frames: the device agrees with libjpeg-turbo on {agreed} of {len(damaged)}")


def _size(resolution: str) -> tuple[int, int]:
    width, height = resolution.split("x")
    return int(width), int(height)


def server_load(out: Output, args: argparse.Namespace) -> None:
    flags = [
        "--engine", "torch",
        "--models", args.model, "--default-model", args.model,
        "--model-dir", str(args.model_dir), "--fetch-models", "false",
        "--engine-batch-sizes", ",".join(str(b) for b in args.server_batches),
        "--max-batch-size", str(args.server_batches[-1]),
        "--max-batches-in-flight", "3", "--max-frames-in-flight", "4096",
        "--max-streams", "4096", "--log-level", "WARNING",
    ]  # fmt: skip

    def report(run: LoadRun) -> None:
        out.line("  " + run.line() + ("  holds" if run.holds() else "  FAILS"))
        out.record("load", **run.__dict__)

    for servers in args.servers:
        resolutions = args.resolutions if servers == 1 else args.resolutions[:1]
        out.line(f"\n## {servers} server process(es) on the one {args.device} device")
        with Servers(servers, flags) as running:
            for resolution in resolutions:
                offered = args.saturation_calls * servers
                saturated = run_load(running, offered, resolution, args.hold_s, args.warm_up_s,
                                     args.generators)  # fmt: skip
                out.line(f"saturation, {offered} calls offered:")
                report(saturated)
                # Above what saturation answered, calls cannot all get 30 FPS.
                high = max(2, int(saturated.answered_per_s / FPS) + 1)

                def measure(calls: int, resolution: str = resolution) -> LoadRun:
                    return run_load(running, calls, resolution, args.hold_s, args.warm_up_s,
                                    args.generators)  # fmt: skip

                held = calls_held(measure, 0, high, report)
                out.line(f"{resolution}: {held} calls at 30 FPS hold the objective "
                         f"with {servers} server process(es)")  # fmt: skip
                out.record("calls_held", servers=servers, resolution=resolution, calls=held)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_gpu", description=__doc__)
    parser.add_argument("--device", default=None, help="cuda (default where torch sees it) or cpu")
    parser.add_argument("--model", default="selfie-general")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-gpu"))
    parser.add_argument("--batches", type=_numbers, default=_numbers("1,2,4,8,16,32,64,128,256"))
    parser.add_argument("--server-batches", type=_numbers, default=_numbers("1,2,4,8,16,32,64"))
    parser.add_argument("--resolutions", default="640x480,1280x720")
    parser.add_argument(
        "--servers", type=_numbers, default=_numbers("1,4"), help="server processes per GPU"
    )
    parser.add_argument("--generators", type=int, default=6, help="load generator processes")
    parser.add_argument("--saturation-calls", type=int, default=400, help="per server process")
    parser.add_argument("--hold-s", type=float, default=5.0)
    parser.add_argument("--warm-up-s", type=float, default=2.0)
    parser.add_argument("--path-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads")
    parser.add_argument("--skip", default="", help="sections to leave out: model,path,load")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs: a dry run on a CPU"
    )
    args = parser.parse_args(argv)
    import torch

    from models.fetch import default_model_dir

    args.device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    args.model_dir = args.model_dir or default_model_dir()
    args.model_path = args.model_dir / model_spec(args.model).file_name
    args.resolutions = args.resolutions.split(",")
    cuda = args.device.startswith("cuda")
    args.precisions = ("float32", "float16") if cuda else ("float32",)
    args.model_runs, args.path_runs = (50, 5) if cuda else (3, 1)
    if args.quick:
        args.batches, args.server_batches = args.batches[:3], args.server_batches[:3]
        args.path_batch, args.saturation_calls = 4, 6
        args.servers, args.generators = args.servers[:2], 1
        args.hold_s, args.warm_up_s = min(args.hold_s, 2.0), min(args.warm_up_s, 1.0)
    out = Output(args.out)
    started = time.monotonic()
    out.line(f"# bench_gpu on {args.device} ({torch.__version__}), {time.ctime()}")
    skip = set(args.skip.split(","))
    if "model" not in skip:
        model_costs(out, args)
    if "path" not in skip:
        frame_path_costs(out, args)
    if "load" not in skip:
        server_load(out, args)
    out.line(f"\ndone in {time.monotonic() - started:.0f} s; figures in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
