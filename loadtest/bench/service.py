"""The whole service under open-loop load, measured as its users would: a `segmentation-server`
process, the load generator (`segmentation-loadtest run`) in a process of its own, and the
server's own CPU time per answered frame (from /proc, by thread group), so that the generator
sharing the machine does not count against the server.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadtest.local_server import ServerProcess
from loadtest.objective import BENCHMARK_OBJECTIVE
from loadtest.process_cpu import GROUPS, CpuSample, sample
from loadtest.search import StepUp, Trial, search_blocking
from loadtest.server_metrics import ok_frames


@dataclass(frozen=True)
class LoadFigures:
    streams: int
    resolution: str
    ok_frames: int  # answered OK by the server during the run (its own counter)
    ok_per_second: float
    cpu_ms_per_ok: dict[str, float]  # by thread group, and "total"
    p50_ms: float
    p99_ms: float
    drop_ratio: float
    error_ratio: float
    mean_batch_size: float
    refused_calls: int  # calls no replica had room for: not carried
    reconnects: int

    def line(self) -> str:
        groups = ", ".join(f"{group} {self.cpu_ms_per_ok[group]:.2f}" for group in GROUPS)
        return (
            f"{self.streams:>3} calls {self.resolution}: p50 {self.p50_ms:6.1f} ms, p99 "
            f"{self.p99_ms:6.1f} ms, dropped {self.drop_ratio:5.1%}, {self.ok_per_second:6.1f} "
            f"OK frames/s, mean batch {self.mean_batch_size:.1f}; server "
            f"{self.cpu_ms_per_ok['total']:.2f} CPU-ms per OK frame ({groups})"
        )


def server_env(checkout: Path | None) -> dict[str, str] | None:
    """Runs the server from another checkout of this repository (a baseline to compare)."""
    if checkout is None:
        return None
    paths = [str(checkout), str(checkout / "clients" / "python")]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def measure_load(
    streams: int,
    server_flags: list[str],
    seconds: float = 10.0,
    resolution: str = "640x480",
    mask_encoding: str = "jpeg",
    checkout: Path | None = None,
) -> LoadFigures:
    """`streams` calls at 30 FPS against a fresh server with `server_flags`."""
    flags = ["--log-level", "WARNING", *server_flags]
    with (
        ServerProcess(*flags, env=server_env(checkout)) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "run.json"
        ok_before, cpu_before = ok_frames(server.metrics_url), sample(server.process.pid)
        subprocess.run(
            [
                str(Path(sys.executable).parent / "segmentation-loadtest"), "run",
                "--target", server.target, "--streams", str(streams), "--fps", "30",
                "--seconds", str(seconds), "--ramp-up-s", "1", "--warm-up-s", "2",
                "--resolution", resolution, "--mask-encoding", mask_encoding,
                "--json", str(report),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        cpu: CpuSample = sample(server.process.pid) - cpu_before
        ok = ok_frames(server.metrics_url) - ok_before
        summary = json.loads(report.read_text())
    overall = summary["overall"]
    per_ok = {group: seconds_ * 1e3 / max(ok, 1) for group, seconds_ in cpu.seconds.items()}
    per_ok["total"] = cpu.total_s * 1e3 / max(ok, 1)
    return LoadFigures(
        streams=streams,
        resolution=resolution,
        ok_frames=int(ok),
        ok_per_second=overall["fps_per_stream"] * streams,
        cpu_ms_per_ok=per_ok,
        p50_ms=overall["latency_ms"]["p50"],
        p99_ms=overall["latency_ms"]["p99"],
        drop_ratio=overall["drop_ratio"],
        error_ratio=overall["error_ratio"],
        mean_batch_size=overall["mean_batch_size"],
        refused_calls=summary["refused_calls"],
        reconnects=summary["reconnects"],
    )


# The serving overhead: what the server spends on a frame beyond the codec and the model. The
# model-free engine runs no model, 160x120 frames make the JPEG decode and the mask scaling
# small, and RAW masks need no encoder: what is left is gRPC, the event loop and the hand-offs
# between threads, which a GPU host pays on the CPU whatever its GPU does.
OVERHEAD_STREAMS = 20
OVERHEAD_FLAGS = ("--engine", "model-free")
OVERHEAD_RESOLUTION = "160x120"
OVERHEAD_MASK_ENCODING = "raw"


def serving_overhead(seconds: float = 10.0, checkout: Path | None = None) -> LoadFigures:
    """20 calls of 160x120 frames at 30 FPS, RAW masks, the model-free engine."""
    return measure_load(
        OVERHEAD_STREAMS,
        list(OVERHEAD_FLAGS),
        seconds,
        OVERHEAD_RESOLUTION,
        OVERHEAD_MASK_ENCODING,
        checkout=checkout,
    )


def calls_carried(
    server_flags: list[str],
    resolution: str = "640x480",
    start: int = 2,
    seconds: float = 6.0,
    checkout: Path | None = None,
    report: bool = True,
) -> tuple[int, list[LoadFigures]]:
    """The most calls at 30 FPS that hold the objective, trying one more call at a time."""

    def measure(streams: int) -> LoadFigures:
        return measure_load(streams, server_flags, seconds, resolution, checkout=checkout)

    def show(trial: Trial[LoadFigures]) -> None:
        print(f"    {trial.figures.line()}  {BENCHMARK_OBJECTIVE.mark(trial.figures)}", flush=True)

    outcome = search_blocking(
        measure, BENCHMARK_OBJECTIVE, StepUp(itertools.count(start)), show if report else None
    )
    return outcome.held, [trial.figures for trial in outcome.trials]
