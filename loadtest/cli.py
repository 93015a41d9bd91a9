"""`segmentation-loadtest`: open-loop load runs, capacity searches and their reports."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from loadtest.capacity import Step, capacity_search, step_table
from loadtest.frames import mean_frame_kilobytes, video_sequence
from loadtest.generator import LoadShape, run_load, terminal_progress
from loadtest.local_server import ServerProcess
from loadtest.objective import Objective
from loadtest.stats import summarize
from segmentation.v1 import segmentation_pb2 as pb

# What `make loadtest` compares: dynamic batching against batches of one, and each engine.
COMPARED = {
    "tflite, dynamic batching": ["--engine", "tflite"],
    "tflite, max_batch_size=1": ["--engine", "tflite", "--max-batch-size", "1"],
    "tensorflow, dynamic batching": ["--engine", "tensorflow"],
}
COMPARISONS = {
    "dynamic batching / batches of one (tflite)": (
        "tflite, dynamic batching",
        "tflite, max_batch_size=1",
    ),
    "tflite / tensorflow (both batching)": (
        "tflite, dynamic batching",
        "tensorflow, dynamic batching",
    ),
}


def _resolution(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def _sequences(resolution: tuple[int, int], streams: int) -> list[list[bytes]]:
    # A few different sequences (two photos, shifted phases) shared round-robin by the streams.
    return [video_sequence(*resolution, frames=60, photo=i) for i in range(min(streams, 2))]


MASK_ENCODINGS = {
    "raw": pb.MASK_ENCODING_RAW_U8,
    "png": pb.MASK_ENCODING_PNG,
    "jpeg": pb.MASK_ENCODING_JPEG,
}


def _server(args: argparse.Namespace, flags: list[str]):
    """The server to load: the one at --target, or one started here with `flags`."""
    if args.target:
        return nullcontext(None)
    return ServerProcess(*flags, "--log-level", "WARNING")


def _machine() -> str:
    return f"{os.cpu_count()} CPUs ({platform.machine()}), load generator on the same machine"


async def _capacity(args: argparse.Namespace, name: str, flags: list[str]) -> dict:
    sequences = _sequences(args.resolution, 2)
    streams_to_try = list(range(args.start, args.max_streams + 1, args.step))
    objective = Objective(args.objective_ms, args.max_drop)
    with _server(args, flags) as server:
        target = args.target or server.target
        metrics_url = args.metrics_url or (server.metrics_url if server else None)
        print(f"\n{name}: capacity search on {target} at {args.fps:g} FPS per stream")
        print(step_table([]))
        steps, answer = await capacity_search(
            target, sequences, args.fps, objective, streams_to_try, args.hold_s, args.warm_up_s,
            metrics_url=metrics_url, mask_encoding=MASK_ENCODINGS[args.mask_encoding],
            on_step=lambda step: print(step_table([step]).splitlines()[1]),
            progress_for=lambda n: terminal_progress(f"{n:>3} streams"),
        )  # fmt: skip
    print(f"{name}: {answer} calls per replica hold the objective")
    return {
        "name": name,
        "server_flags": flags,
        "capacity": answer,
        "steps": [asdict(step) for step in steps],
    }


def _results(args: argparse.Namespace, configurations: list[dict]) -> dict:
    return {
        "fps": args.fps,
        "mask_encoding": args.mask_encoding,
        "resolution": f"{args.resolution[0]}x{args.resolution[1]}",
        "objective": asdict(Objective(args.objective_ms, args.max_drop)),
        "hold_s": args.hold_s,
        "warm_up_s": args.warm_up_s,
        "machine": _machine(),
        "configurations": configurations,
    }


async def _command_run(args: argparse.Namespace) -> int:
    sequences = _sequences(args.resolution, args.streams)
    width, height = args.resolution
    print(f"{width}x{height} frames, ~{mean_frame_kilobytes(sequences[0]):.0f} kB")
    shape = LoadShape(args.streams, args.fps, args.seconds, args.ramp_up_s, args.warm_up_s)
    with _server(args, shlex.split(args.server_flags)) as server:
        target = args.target or server.target
        result = await run_load(
            target,
            shape,
            sequences,
            progress=terminal_progress("load"),
            mask_encoding=MASK_ENCODINGS[args.mask_encoding],
        )
    summary = summarize(result)
    overall = summary["overall"]
    latency = overall["latency_ms"]
    print(
        f"{args.streams} streams x {args.fps:g} FPS for {args.seconds:g} s: latency p50 "
        f"{latency['p50']:.1f} / p95 {latency['p95']:.1f} / p99 {latency['p99']:.1f} / max "
        f"{latency['max']:.1f} ms; {overall['fps_per_stream']:.1f} FPS per stream; dropped "
        f"{overall['drop_ratio']:.1%}, errors {overall['error_ratio']:.1%}; send lag p99 "
        f"{overall['send_lag_p99_ms']:.1f} ms"
    )
    if summary["reconnects"]:
        print(
            f"  {summary['reconnects']} reconnects; {overall['dropped_locally']} frames "
            "dropped by the client while reconnecting"
        )
    if summary["refused_calls"]:
        print(f"  {summary['refused_calls']} calls refused by every replica: not carried")
    for error in summary["stream_errors"]:
        print(f"  {error}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
        print(f"report: {args.json}")
    return 0


async def _command_capacity(args: argparse.Namespace) -> int:
    configuration = await _capacity(args, args.name, shlex.split(args.server_flags))
    results = _results(args, [configuration])
    print("\n" + step_table([Step(**s) for s in configuration["steps"]]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.out:
        from loadtest.report import write_report  # matplotlib: only for reports

        for path in write_report(results, args.out):
            print(f"wrote {path}")
    return 0


async def _command_compare(args: argparse.Namespace) -> int:
    configurations = [await _capacity(args, name, flags) for name, flags in COMPARED.items()]
    results = _results(args, configurations)
    results["comparisons"] = COMPARISONS
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    for configuration in configurations:
        print(f"{configuration['name']:<32} {configuration['capacity']:>3} calls per replica")
    from loadtest.report import write_report  # matplotlib: only for reports

    for path in write_report(results, args.out):
        print(f"wrote {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segmentation-loadtest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def load_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--target", help="server HOST:PORT (default: start one here)")
        command.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
        command.add_argument("--resolution", type=_resolution, default=(640, 480))
        command.add_argument("--warm-up-s", type=float, default=3.0)
        command.add_argument(
            "--mask-encoding",
            choices=sorted(MASK_ENCODINGS),
            default="jpeg",
            help="of the masks asked for, at frame size",
        )

    def search_options(command: argparse.ArgumentParser) -> None:
        load_options(command)
        command.add_argument("--objective-ms", type=float, default=100.0, help="p99 latency")
        command.add_argument("--max-drop", type=float, default=0.01, help="dropped frames ratio")
        command.add_argument("--start", type=int, default=2)
        command.add_argument("--step", type=int, default=2)
        command.add_argument("--max-streams", type=int, default=64)
        command.add_argument("--hold-s", type=float, default=20.0, help="length of each step")
        command.add_argument("--metrics-url", help="the server's /metrics (with --target)")

    run = commands.add_parser("run", help="N streams at F FPS, open loop")
    load_options(run)
    run.add_argument("--streams", type=int, default=8)
    run.add_argument("--seconds", type=float, default=20.0)
    run.add_argument("--ramp-up-s", type=float, default=2.0)
    run.add_argument("--server-flags", default="", help="flags of the server started here")
    run.add_argument("--json", type=Path, help="write the report here")

    capacity = commands.add_parser("capacity", help="the most streams that hold the objective")
    search_options(capacity)
    capacity.add_argument("--name", default="server")
    capacity.add_argument("--server-flags", default="", help="flags of the server started here")
    capacity.add_argument("--json", type=Path)
    capacity.add_argument("--out", type=Path, help="write plots and summary.md here")

    compare = commands.add_parser(
        "compare", help="capacity of each configuration `make loadtest` compares"
    )
    search_options(compare)
    compare.add_argument("--out", type=Path, default=Path("loadtest-report"))

    report = commands.add_parser("report", help="plots and summary.md from result files")
    report.add_argument("results", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=Path("loadtest-report"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "report":
        from loadtest.report import load_results, write_report  # matplotlib: only for reports

        for path in write_report(load_results(args.results), args.out):
            print(f"wrote {path}")
        sys.exit(0)
    if args.command == "compare" and args.target:
        sys.exit("compare starts its own servers; it takes no --target")
    command = {"run": _command_run, "capacity": _command_capacity, "compare": _command_compare}
    sys.exit(asyncio.run(command[args.command](args)))


if __name__ == "__main__":
    main()
