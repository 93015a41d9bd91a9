"""`make bench`: what a frame costs, and what the service spends on it, in one run.

1. The floor: each step a frame needs (decode, resize, inference, mask upscale, encode),
   measured alone on one core in its cheapest configuration (`loadtest/bench/floor.py`).
2. The service under open-loop load (`loadtest/bench/service.py`): a server process, the
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadtest.bench.deeplab import bench_deeplab
from loadtest.bench.floor import format_floor
from loadtest.bench.process_memory import rss_mb
from loadtest.bench.quality import bench_quality
from loadtest.bench.service import (
    OVERHEAD_FLAGS,
    OVERHEAD_MASK_ENCODING,
    OVERHEAD_RESOLUTION,
    OVERHEAD_STREAMS,
    LoadFigures,
    calls_carried,
    measure_load,
    server_env,
    serving_overhead,
)
from loadtest.local_server import ServerProcess
from loadtest.objective import BENCHMARK_OBJECTIVE
from loadtest.process_cpu import GROUPS
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
        [sys.executable, "-m", "loadtest.bench.floor", "--resolutions", ",".join(resolutions)],
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


SECTIONS = ("memory", "floor", "load", "front-end", "overhead", "capacity", "engines")


def _measure_both(
    measure: Callable[[Path | None], LoadFigures], baseline: Path | None
) -> tuple[LoadFigures, LoadFigures | None]:
    """This checkout's figures and the baseline's, one after the other in the same run."""
    return measure(None), (measure(baseline) if baseline else None)


def _ratio(now: float, baseline: float) -> str:
    return f"{now / baseline:.2f}x the baseline" if baseline else "baseline 0"


def bench_overhead(seconds: float, baseline: Path | None, rounds: int) -> None:
    """The serving overhead line: server CPU-ms per OK frame by thread group, this checkout's
    against the baseline's, measured in turn `rounds` times (the median of each side)."""
    print(
        f"\nServing overhead ({OVERHEAD_STREAMS} calls of {OVERHEAD_RESOLUTION}, "
        f"{OVERHEAD_MASK_ENCODING} masks, {' '.join(OVERHEAD_FLAGS)}; server CPU-ms per OK "
        f"frame by thread group):"
    )
    runs: list[tuple[LoadFigures, LoadFigures | None]] = []
    for _ in range(rounds):
        runs.append(_measure_both(lambda checkout: serving_overhead(seconds, checkout), baseline))
        _print_side_by_side(f"round {len(runs)}", *runs[-1])
    groups = (*GROUPS, "total")
    now = {g: float(np.median([r[0].cpu_ms_per_ok[g] for r in runs])) for g in groups}
    line = ", ".join(f"{g} {now[g]:.3f}" for g in groups)
    print(f"  serving overhead: {line} CPU-ms per OK frame (median of {rounds})")
    if baseline:
        base = {g: float(np.median([r[1].cpu_ms_per_ok[g] for r in runs])) for g in groups}
        print("  baseline:         " + ", ".join(f"{g} {base[g]:.3f}" for g in groups))
        print(
            "  now / baseline:   "
            + ", ".join(f"{g} {now[g] / base[g]:.2f}" if base[g] else f"{g} -" for g in groups)
        )


def bench_front_end(streams: int, seconds: float, baseline: Path | None) -> None:
    """The front end alone at 640x480 (model-free engine): what one process can feed a model."""
    now, base = _measure_both(
        lambda checkout: measure_load(
            streams, ["--engine", "model-free"], seconds, checkout=checkout
        ),
        baseline,
    )
    print("  the front end alone (engine model-free: no model, a constant mask):")
    for label, figures in (("now", now), ("baseline", base)):
        if figures is None:
            continue
        loop_ms, total_ms = figures.cpu_ms_per_ok["event_loop"], figures.cpu_ms_per_ok["total"]
        print(
            f"    {label + ':':<9} {figures.line()}\n"
            f"              event loop {loop_ms:.2f} ms a frame, {loop_ms / total_ms:.0%} of the "
            f"server's CPU: one server process feeds a model at most {1e3 / loop_ms:.0f} "
            f"frames/s (the loop does not spread over cores); the rest "
            f"({total_ms - loop_ms:.2f} CPU-ms a frame) spreads over the codec threads"
        )
    if base is not None:
        print(
            "    event loop per frame: "
            + _ratio(now.cpu_ms_per_ok["event_loop"], base.cpu_ms_per_ok["event_loop"])
        )


def bench_load(
    streams: int,
    flags: list[str],
    seconds: float,
    baseline: Path | None,
    floor_ms: float | None = None,
) -> None:
    """The main measurement (`streams` calls of 640x480) and one call alone, with the floor's
    ratio when the floor was measured."""
    loaded, base = _measure_both(
        lambda checkout: measure_load(streams, flags, seconds, checkout=checkout), baseline
    )
    _print_side_by_side(f"{streams} calls of 640x480", loaded, base)
    if floor_ms:
        print(
            f"    server CPU per OK frame / floor = {loaded.cpu_ms_per_ok['total'] / floor_ms:.2f}"
            + (f" (baseline {base.cpu_ms_per_ok['total'] / floor_ms:.2f})" if base else "")
        )
    if base is not None:
        print(
            "    server CPU per OK frame: "
            + _ratio(loaded.cpu_ms_per_ok["total"], base.cpu_ms_per_ok["total"])
            + f"; OK frames/s {loaded.ok_per_second:.1f} against {base.ok_per_second:.1f}"
        )
    lone, lone_base = _measure_both(
        lambda checkout: measure_load(1, flags, seconds, checkout=checkout), baseline
    )
    _print_side_by_side("one call alone", lone, lone_base)


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
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(SECTIONS),
        help=f"the sections to run, comma-separated, of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--overhead-rounds",
        type=int,
        default=3,
        help="times the serving overhead is measured, each side in turn (the median is shown)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    sections = set(args.only) - ({"engines"} if args.skip_engines else set())
    config = ServiceConfig.from_args([])
    flags = ["--engine", "tflite"]  # what `auto` picks on a CPU (named, for older baselines)
    print(f"{os.cpu_count()} CPUs; server flags {flags}, otherwise its defaults; JPEG masks")

    if "memory" in sections:
        rss = ready_rss_mb([])
        rss_baseline = ready_rss_mb([], args.baseline) if args.baseline else None
        print(
            f"\nServer resident memory once warm, default settings: {rss:.0f} MB"
            + (f" (baseline {rss_baseline:.0f} MB)" if rss_baseline else "")
        )

    floor_ms = None
    if "floor" in sections:
        floors = _floor(["640x480", "1280x720"])
        print("\nThe floor: each step alone on one core, cheapest configuration (median CPU-ms):")
        for resolution, floor in floors.items():
            print("  " + format_floor(*map(int, resolution.split("x")), floor))
        floor_ms = floors["640x480"]["total"]

    if sections & {"load", "front-end"}:
        print("\nThe service, open-loop load at 30 FPS per call, generator in its own process:")
    if "load" in sections:
        bench_load(args.streams, flags, args.seconds, args.baseline, floor_ms)
    if "front-end" in sections:
        bench_front_end(args.streams * 2, args.seconds, args.baseline)
    if "overhead" in sections:
        bench_overhead(args.seconds, args.baseline, args.overhead_rounds)

    if "capacity" in sections:
        print(f"\nCalls carried at 30 FPS ({BENCHMARK_OBJECTIVE.terms()}):")
        for label, step_flags, resolution, checkout in (
            ("640x480, dynamic batching", flags, "640x480", None),
            ("640x480, batches of one", [*flags, "--max-batch-size", "1"], "640x480", None),
            ("1280x720, dynamic batching", flags, "1280x720", None),
            *([("640x480, baseline", flags, "640x480", args.baseline)] if args.baseline else []),
        ):
            print(f"  {label}:")
            carried, _steps = calls_carried(step_flags, resolution, checkout=checkout)
            print(f"  {label}: {carried} calls")

    if "engines" in sections:
        bench_engine_batches(config)
        bench_quality(config)
        bench_deeplab()


if __name__ == "__main__":
    main()
