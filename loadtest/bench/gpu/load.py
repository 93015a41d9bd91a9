"""Server processes on one GPU under open-loop load from generator processes of their own:
answered frames/s at saturation, and the calls held at 30 FPS under the objective, found by
bisection. The generators share the host's cores with the servers, so each run reports both
sides' CPU: the servers' from /proc (by thread group), the generators' from their rusage."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from loadtest.local_server import ServerProcess
from loadtest.objective import BENCHMARK_OBJECTIVE
from loadtest.process_cpu import sample
from loadtest.search import Bisection, search_blocking
from loadtest.server_metrics import ok_frames

FPS = 30.0


@dataclass(frozen=True)
class LoadRun:
    servers: int
    calls: int
    resolution: str
    answered_per_s: float  # OK frames per second, counted by the callers
    p99_ms: float  # the worst generator's p99
    drop_ratio: float
    error_ratio: float
    server_cpu_ms_per_frame: float  # all servers' CPU over the frames they answered OK
    generator_cpu_cores: float  # the generators' CPU time over the run's wall time
    mean_batch_size: float
    refused_calls: int = 0  # calls no replica had room for: not carried
    reconnects: int = 0

    def holds(self) -> bool:
        return BENCHMARK_OBJECTIVE.holds(self)

    def line(self) -> str:
        return (
            f"{self.servers} server(s), {self.calls:>4} calls {self.resolution}: "
            f"{self.answered_per_s:7.0f} answered frames/s, p99 {self.p99_ms:6.1f} ms, dropped "
            f"{self.drop_ratio:5.1%}, errors {self.error_ratio:.1%}, batch "
            f"{self.mean_batch_size:5.1f}; servers {self.server_cpu_ms_per_frame:.2f} CPU-ms "
            f"per frame, generators {self.generator_cpu_cores:.1f} cores"
        )


class Servers:
    """`count` server processes on this host (one GPU), each with `flags`."""

    def __init__(self, count: int, flags: list[str], ready_timeout_s: float | None = None) -> None:
        self._stack = ExitStack()
        self._flags = flags
        self.count = count
        # They start together and contend for the GPU and the cores: the wait grows with them.
        self._ready_timeout_s = ready_timeout_s or 60.0 + 30.0 * count
        self.processes: list[ServerProcess] = []

    def __enter__(self) -> Servers:
        # Started together, then waited for: their warm-ups (CUDA graphs) overlap. Each is
        # stopped on the way out, even where another one failed to start.
        try:
            for _ in range(self.count):
                server = ServerProcess(*self._flags, ready_timeout_s=self._ready_timeout_s)
                self._stack.callback(server.stop)
                self.processes.append(server)
            for server in self.processes:
                server.wait_until_serving()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def ok_frames(self) -> float:
        return sum(ok_frames(server.metrics_url) for server in self.processes)

    def cpu_s(self) -> float:
        return sum(sample(server.process.pid).total_s for server in self.processes)


def run_load(
    servers: Servers,
    calls: int,
    resolution: str,
    hold_s: float,
    warm_up_s: float,
    generators: int,
    mask_encoding: str = "jpeg",
) -> LoadRun:
    """`calls` calls at 30 FPS spread over the servers, from `generators` processes (at least
    one per server), each an open-loop `loadtest.cli run`."""
    shares = stream_shares(calls, servers.count, generators)
    ok_before, cpu_before = servers.ok_frames(), servers.cpu_s()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        running = []
        for n, (server, streams) in enumerate(shares):
            report = Path(tmp) / f"generator-{n}.json"
            target = servers.processes[server].target
            command = [
                sys.executable, "-m", "loadtest.cli", "run", "--target", target,
                "--streams", str(streams), "--fps", str(FPS), "--seconds", str(hold_s),
                "--ramp-up-s", "1", "--warm-up-s", str(warm_up_s), "--resolution", resolution,
                "--mask-encoding", mask_encoding, "--json", str(report),
            ]  # fmt: skip
            running.append((streams, report, subprocess.Popen(command, stdout=subprocess.DEVNULL)))
        reports = []
        for streams, report, process in running:
            if process.wait() != 0:
                raise RuntimeError(f"a load generator failed (exit {process.returncode})")
            reports.append((streams, json.loads(report.read_text())))
    wall_s = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator_cpu_s = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    ok = servers.ok_frames() - ok_before
    total_streams = sum(streams for streams, _ in reports)

    def mean(figure: str) -> float:  # over the generators, weighted by their streams
        return sum(streams * s["overall"][figure] for streams, s in reports) / total_streams

    return LoadRun(
        servers=servers.count,
        calls=calls,
        resolution=resolution,
        answered_per_s=sum(streams * s["overall"]["fps_per_stream"] for streams, s in reports),
        p99_ms=max(s["overall"]["latency_ms"]["p99"] for _, s in reports),
        drop_ratio=mean("drop_ratio"),
        error_ratio=mean("error_ratio"),
        server_cpu_ms_per_frame=(servers.cpu_s() - cpu_before) * 1e3 / max(ok, 1),
        generator_cpu_cores=generator_cpu_s / wall_s,
        mean_batch_size=mean("mean_batch_size"),
        refused_calls=sum(s["refused_calls"] for _, s in reports),
        reconnects=sum(s["reconnects"] for _, s in reports),
    )


def stream_shares(calls: int, servers: int, generators: int) -> list[tuple[int, int]]:
    """(server, streams) for each generator process: the calls spread evenly over the
    servers, each server's share over the same number of generators (at least one each)."""
    per_server = -(-max(generators, servers) // servers)
    shares = []
    for server in range(servers):
        mine = calls // servers + (server < calls % servers)
        for n in range(per_server):
            streams = mine // per_server + (n < mine % per_server)
            if streams:
                shares.append((server, streams))
    return shares


def calls_held(
    measure: Callable[[int], LoadRun],
    low: int,
    high: int,
    report: Callable[[LoadRun], None],
    more_time: Callable[[], bool] = lambda: True,
    guess: int | None = None,
) -> tuple[int, int]:
    """The most calls that hold the objective, by bisection between `low` (assumed to hold;
    0 for none) and `high` (assumed to fail), `guess` first when given, to within 5% of
    `high` or one call, or until `more_time()` says no: (the most that held, the fewest that
    failed)."""
    bisection = Bisection(low, high, more_time, guess)
    outcome = search_blocking(
        measure, BENCHMARK_OBJECTIVE, bisection, lambda trial: report(trial.figures)
    )
    assert outcome.failed is not None  # a bisection keeps a count that fails
    return outcome.held, outcome.failed
