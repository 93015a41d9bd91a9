"""`make bench`: what a frame costs, and what the service spends on it, in one run.

1. The floor: each step a frame needs (decode, resize, inference, mask upscale, encode),
   measured alone on one core in its cheapest configuration (`loadtest/bench_floor.py`).
2. The service under open-loop load (`loadtest/bench_service.py`): a server process, the
   generator in a process of its own, the server's own CPU time per OK frame by thread group
   (event loop, codec, engine, other), latency and drops; its ratio to the floor; one call
   alone; the front end alone (engine `model-free`), which tells how many frames one server
   process can feed a GPU.
3. Calls carried at 30 FPS under the objective, with dynamic batching and with batches of one.
4. The engines at each batch size, mask quality, and DeepLab one at a time against batched.

`--baseline CHECKOUT` measures another checkout's server the same way, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from loadtest.bench_deeplab import bench_deeplab
from loadtest.bench_floor import format_floor
from loadtest.bench_quality import bench_quality
from loadtest.bench_service import LoadFigures, calls_carried, measure_load, server_env
from loadtest.local_server import ServerProcess
from loadtest.process_memory import rss_mb
from models.fetch import ensure_model_files
from models.registry import model_spec
from service.config import ServiceConfig
from service.engines.base import Engine
from service.engines.tensorflow import TensorFlowEngine, configure_tensorflow
from service.engines.tflite import TFLiteEngine
from service.timing import median_ms


def ms_per_frame(engine: Engine, batch: int = 8, runs: int = 5) -> float:
    """Median engine time per frame at `batch` (random frames), after one unmeasured run."""
    frames = np.random.default_rng(0).integers(
        0, 256, (batch, engine.spec.input_height, engine.spec.input_width, 3), np.uint8
    )
    return median_ms(lambda: engine.infer(frames), runs) / batch


def bench_engine_batches(config: ServiceConfig) -> None:
    """Per-frame cost of each engine at each batch size, and batch 32 against batch 1."""
    from models.convert import ensure_savedmodel

    spec = model_spec(config.default_model)
    path = ensure_model_files([spec], Path(config.model_dir), config.fetch_models)[spec.name]
    savedmodel = ensure_savedmodel(spec, path, Path(config.model_dir))
    device = configure_tensorflow(config.engine_threads)
    sizes = (1, 2, 4, 8, 16, 32)
    engines = (
        TFLiteEngine(spec, path, config.engine_threads),
        TensorFlowEngine(spec, savedmodel, device, sizes),
    )
    print(f"\nengine cost per frame (ms), {spec.name} on {device}, median of 20 runs:")
    print("engine      " + "".join(f"{f'batch {size}':>10}" for size in sizes) + "   b32/b1")
    for engine in engines:
        engine.warm_up()
        costs = [ms_per_frame(engine, size, runs=20) for size in sizes]
        print(
            f"{engine.name:<12}" + "".join(f"{cost:10.2f}" for cost in costs)
            + f"   {costs[-1] / costs[0]:6.2f}"
        )  # fmt: skip


def _floor(resolutions: list[str]) -> dict[str, dict[str, float]]:
    """The floor of each resolution, measured in a process pinned to one core."""
    output = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_floor", "--resolutions", ",".join(resolutions)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _print_side_by_side(label: str, figures: LoadFigures, baseline: LoadFigures | None) -> None:
    print(f"  {label}")
    print(f"    now:      {figures.line()}")
    if baseline is not None:
        print(f"    baseline: {baseline.line()}")


def ready_rss_mb(flags: list[str], checkout: Path | None = None) -> float:
    """Resident memory of a server with `flags` once it serves (its models warm), in MB."""
    with ServerProcess("--log-level", "WARNING", *flags, env=server_env(checkout)) as server:
        return rss_mb(server.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--streams", type=int, default=10, help="calls of the main measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of this repository (say, of an older commit, with its stubs "
        "generated): its server is measured the same way, side by side",
    )
    parser.add_argument(
        "--skip-engines", action="store_true", help="leave out the engine, quality and DeepLab"
    )
    args = parser.parse_args()
    config = ServiceConfig.from_args([])
    flags = ["--engine", "tflite"]  # what `auto` picks on a CPU (named, for older baselines)
    print(f"{os.cpu_count()} CPUs; server flags {flags}, otherwise its defaults; JPEG masks")

    rss = ready_rss_mb([])
    rss_baseline = ready_rss_mb([], args.baseline) if args.baseline else None
    print(
        f"\nServer resident memory once warm, default settings: {rss:.0f} MB"
        + (f" (baseline {rss_baseline:.0f} MB)" if rss_baseline else "")
    )

    floors = _floor(["640x480", "1280x720"])
    print("\nThe floor: each step alone on one core, cheapest configuration (median CPU-ms):")
    for resolution, floor in floors.items():
        print("  " + format_floor(*map(int, resolution.split("x")), floor))

    print("\nThe service, open-loop load at 30 FPS per call, generator in its own process:")
    loaded = measure_load(args.streams, flags, args.seconds)
    baseline = (
        measure_load(args.streams, flags, args.seconds, checkout=args.baseline)
        if (args.baseline)
        else None
    )
    _print_side_by_side(f"{args.streams} calls of 640x480", loaded, baseline)
    floor = floors["640x480"]["total"]
    print(
        f"    server CPU per OK frame / floor = {loaded.cpu_ms_per_ok['total'] / floor:.2f}"
        + (f" (baseline {baseline.cpu_ms_per_ok['total'] / floor:.2f})" if baseline else "")
    )
    lone = measure_load(1, flags, args.seconds)
    lone_baseline = (
        measure_load(1, flags, args.seconds, checkout=args.baseline) if (args.baseline) else None
    )
    _print_side_by_side("one call alone", lone, lone_baseline)

    front_end = measure_load(args.streams * 2, ["--engine", "model-free"], args.seconds)
    loop_ms = front_end.cpu_ms_per_ok["event_loop"]
    print(
        f"  the front end alone (engine model-free: no model, a constant mask):\n"
        f"    {front_end.line()}\n"
        f"    one server process feeds a model at most {1e3 / loop_ms:.0f} frames/s (its event "
        f"loop, {loop_ms:.2f} ms a frame, does not spread over cores); the rest "
        f"({front_end.cpu_ms_per_ok['total'] - loop_ms:.2f} CPU-ms a frame) spreads over the "
        f"codec threads"
    )

    print("\nCalls carried at 30 FPS (p99 <= 100 ms, <= 1% dropped, no errors):")
    for label, step_flags, resolution, checkout in (
        ("640x480, dynamic batching", flags, "640x480", None),
        ("640x480, batches of one", [*flags, "--max-batch-size", "1"], "640x480", None),
        ("1280x720, dynamic batching", flags, "1280x720", None),
        *([("640x480, baseline", flags, "640x480", args.baseline)] if args.baseline else []),
    ):
        print(f"  {label}:")
        carried, _steps = calls_carried(step_flags, resolution, checkout=checkout)
        print(f"  {label}: {carried} calls")

    if not args.skip_engines:
        bench_engine_batches(config)
        bench_quality(config)
        bench_deeplab()


if __name__ == "__main__":
    main()
