"""The GPU benchmark's figures, after its self-checks: the model alone, the frame path per
frame (CPU-ms, and GPU-ms from the device's own events), and server processes under open-loop
load. Each is a section of `run.py`; the load sections fit their bisections into the time
the run's deadline leaves them."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from loadtest.bench.gpu.bench import Bench, size_of, through
from loadtest.bench.gpu.load import FPS, LoadRun, Servers, calls_held, run_load
from loadtest.objective import BENCHMARK_OBJECTIVE
from loadtest.search import bisection_tolerance


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def model(bench: Bench) -> None:
    """ms per frame by batch size, each precision, on-device input; float16's worst mask IoU
    against float32, and float32 on the device against float32 on the CPU."""
    import torch

    from service.engines.torch_engine import TorchEngine, mask_iou, photo_check_frames

    args, out = bench.args, bench.out
    photos = photo_check_frames(bench.spec)
    full_alpha = None
    for precision in args.precisions:
        engine = TorchEngine(bench.spec, bench.model_path(), bench.device, tuple(args.batches),
                             precision=precision, threads=args.threads)  # fmt: skip
        engine.warm_up()
        figures = {}
        for batch in args.batches:
            frames = torch.from_numpy(photos[np.arange(batch) % len(photos)]).to(bench.device)
            with torch.inference_mode():
                engine.infer_on_device(frames)
                _synchronize(bench.device)
                started = time.perf_counter()
                for _ in range(args.model_runs):
                    engine.infer_on_device(frames)
                _synchronize(bench.device)
            figures[batch] = (time.perf_counter() - started) * 1e3 / args.model_runs / batch
        alpha = engine.infer(photos)
        if precision == "float32":
            full_alpha = alpha
        worst = min(mask_iou(f, h) for f, h in zip(full_alpha, alpha, strict=True))
        out.line(f"{precision:>8}: ms per frame by batch size "
                 + ", ".join(f"{batch}: {ms:.3f}" for batch, ms in figures.items())
                 + f"  (worst mask IoU against float32 on photos: {worst:.4f})")  # fmt: skip
        out.record("model", precision=precision, ms_per_frame=figures, worst_iou=worst)
    if bench.cuda:
        # The CPU module matches LiteRT within 1e-4 (models.verify): IEEE float32 against it.
        on_cpu = TorchEngine(bench.spec, bench.model_path(), "cpu").infer(photos)
        difference = float(np.abs(on_cpu - full_alpha).max())
        out.line(f"float32 on {bench.device} against float32 on the CPU: max abs difference "
                 f"{difference:.2e}")  # fmt: skip
        out.record("cuda_parity", max_abs_diff=difference)


def path(bench: Bench) -> None:
    """A batch from JPEG bytes to answers (JPEG masks): the GPU path's CPU-ms and GPU-ms (the
    device's events around its decode, model, and composite and encode) per frame, beside the
    CPU path's CPU-ms with the same engine; both paths' masks against the ideal path's."""
    from loadtest.frames import video_sequence
    from service.frames.codec import MaskEncoding
    from service.frames.path import FrameJob
    from service.frames.requests import OutputRequest

    args, out = bench.args, bench.out
    paths = {"gpu": bench.gpu_path(), "cpu": bench.cpu_path()}
    batch = args.path_batch
    request = OutputRequest(0, 0, MaskEncoding.JPEG)
    for resolution in args.resolutions:
        jpegs = video_sequence(*size_of(resolution), frames=batch)
        jobs = [FrameJob(jpeg, request) for jpeg in jpegs]
        figures: dict[str, dict[str, float]] = {}
        for name, frame_path in paths.items():
            through(frame_path, jobs)
            device_s = 0.0
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            for _ in range(args.path_runs):
                _, batched = through(frame_path, jobs)
                stages = getattr(batched[0], "stages", None)
                if stages is not None:
                    device_s += stages.decode_s + stages.model_s + stages.encode_s
            frames = batch * args.path_runs
            figures[name] = {
                "cpu_ms": (time.process_time() - cpu_started) * 1e3 / frames,
                "wall_ms": (time.perf_counter() - wall_started) * 1e3 / frames,
                "device_ms": device_s * 1e3 / frames,
            }
        gpu, cpu = figures["gpu"], figures["cpu"]
        out.line(f"{resolution}, batches of {batch}: GPU path {gpu['cpu_ms']:.2f} CPU-ms and "
                 f"{gpu['device_ms']:.2f} GPU-ms (device events) per frame, "
                 f"{gpu['wall_ms']:.2f} ms of wall; CPU path {cpu['cpu_ms']:.2f} CPU-ms per "
                 f"frame (same engine)")  # fmt: skip
        out.record("frame_path_costs", resolution=resolution, batch=batch, **figures)
        _mask_quality(bench, paths, jpegs, resolution)


def _mask_quality(bench: Bench, paths: dict[str, Any], jpegs: list[bytes], resolution: str) -> None:
    from service.frames.codec import MaskEncoding
    from service.frames.path import FrameJob
    from service.frames.requests import OutputRequest

    raw = OutputRequest(0, 0, MaskEncoding.RAW_U8)
    masks = {}
    for name, frame_path in paths.items():
        answers, _ = through(frame_path, [FrameJob(jpeg, raw) for jpeg in jpegs])
        masks[name] = [np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width) >= 128
                       for mask, _ in answers]  # fmt: skip
    # Frames whose person covers under 5% of the ideal mask are left out: an IoU of a few
    # pixels says nothing (the panning window leaves the person in some frames).
    ideal = _ideal_masks(jpegs, bench)
    kept = [n for n, mask in enumerate(ideal) if mask.mean() >= 0.05]
    ious = {name: [_iou(found[n], ideal[n]) for n in kept] for name, found in masks.items()}
    bench.out.line(f"{resolution}: mask IoU against the ideal path (full decode, antialiased "
                   f"stretch, float32 on the CPU), {len(kept)} frames showing a person: GPU "
                   f"path worst {min(ious['gpu'], default=1):.4f}, CPU path worst "
                   f"{min(ious['cpu'], default=1):.4f}")  # fmt: skip
    bench.out.record("path_iou", resolution=resolution, frames=len(kept), iou=ious)


def _ideal_masks(jpegs: list[bytes], bench: Bench) -> list[np.ndarray]:
    """tests/reference.py's masks, with the torch module on the CPU (which matches LiteRT
    within 1e-4) where LiteRT is not installed."""
    import io

    from PIL import Image

    from service.engines.torch_engine import TorchEngine

    engine = TorchEngine(bench.spec, bench.model_path(), "cpu")
    masks = []
    for jpeg in jpegs:
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        pixels = image.resize((bench.spec.input_width, bench.spec.input_height), Image.BILINEAR)
        alpha = engine.infer(np.asarray(pixels)[None])[0]
        upscaled = np.asarray(Image.fromarray(alpha, "F").resize(image.size))
        masks.append(upscaled >= 0.5)
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _server_flags(bench: Bench) -> list[str]:
    args = bench.args
    return [
        "--engine", "torch",
        "--models", args.model, "--default-model", args.model,
        "--model-dir", str(bench.model_dir), "--fetch-models", "false",
        "--engine-batch-sizes", ",".join(str(b) for b in args.server_batches),
        "--max-batch-size", str(args.server_batches[-1]),
        "--max-batches-in-flight", "3", "--max-frames-in-flight", "4096",
        "--max-streams", "4096", "--log-level", "WARNING",
    ]  # fmt: skip


def _load(bench: Bench, servers: int, resolutions: list[str], share: float) -> None:
    """Saturation, then the calls held at 30 FPS by bisection, for each resolution that fits
    in `share` of the time the deadline leaves (the first always runs)."""
    args, out = bench.args, bench.out
    ends = time.monotonic() + bench.deadline.left_s() * share
    run_s = args.hold_s + args.warm_up_s + 4.0  # a generator's start and ramp-up included

    def report(run: LoadRun) -> None:
        out.line(f"  {run.line()}  {BENCHMARK_OBJECTIVE.mark(run)}")
        out.record("load", **run.__dict__)

    ready_s = min(60.0 + 30.0 * servers, max(10.0, bench.deadline.left_s() - run_s))
    with Servers(servers, _server_flags(bench), ready_s) as running:
        for n, resolution in enumerate(resolutions):
            if n and time.monotonic() + 3 * run_s > ends:
                out.line(f"{resolution}: not measured (no time left before the deadline)")
                continue
            offered = args.saturation_calls * servers
            saturated = run_load(running, offered, resolution, args.hold_s, args.warm_up_s,
                                 args.generators)  # fmt: skip
            out.line(f"{resolution}, saturation, {offered} calls offered:")
            report(saturated)
            high = max(2, int(saturated.answered_per_s / FPS) + 1)  # more cannot get 30 FPS

            def measure(calls: int, resolution: str = resolution) -> LoadRun:
                return run_load(running, calls, resolution, args.hold_s, args.warm_up_s,
                                args.generators)  # fmt: skip

            left = len(resolutions) - n
            share_ends = time.monotonic() + (ends - time.monotonic()) / left

            def more_time(share_ends: float = share_ends) -> bool:
                return time.monotonic() + run_s <= share_ends

            # The first guess near where the objective usually breaks, so that a bisection cut
            # short by the deadline still brackets the answer closely.
            low, fails = calls_held(
                measure, 0, high, report, more_time, guess=max(1, int(high * 0.8))
            )
            cut = "" if fails - low <= bisection_tolerance(high) else (
                f" (bisection cut short by the deadline: {fails} fail)")  # fmt: skip
            out.line(f"{resolution}: {low} calls at 30 FPS hold the objective with {servers} "
                     f"server process(es){cut}")  # fmt: skip
            out.record("calls_held", servers=servers, resolution=resolution, calls=low,
                       fails_at=fails)  # fmt: skip


def load_1(bench: Bench) -> None:
    """One server process; load-4 comes after it, so this takes about half the time left."""
    _load(bench, 1, bench.args.resolutions, 0.45 if "load-4" in bench.args.sections else 1.0)


def load_4(bench: Bench) -> None:
    """Several server processes on the one GPU (4; at most 2 in the CPU dry run)."""
    _load(bench, bench.args.load_servers, bench.args.resolutions, 1.0)
