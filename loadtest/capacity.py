"""How many calls one replica carries: the largest number of streams at F FPS that hold the
objective (`objective.py`), found by trying the counts asked for in turn (`search.py`), with
the server's own view of each step beside the load's when its metrics are scraped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from loadtest.generator import LoadShape, run_load
from loadtest.objective import Objective
from loadtest.search import StepUp, Trial, search
from loadtest.server_metrics import scrape, server_view
from loadtest.stats import summarize
from segmentation.v1 import segmentation_pb2 as pb


@dataclass
class Step:
    streams: int
    passed: bool
    why: str
    client: dict  # stats.summarize()["overall"]
    server: dict | None  # ServerView as a dict, when the metrics were scraped


@dataclass(frozen=True)
class StepLoad:
    """One step's figures as the objective reads them."""

    client: dict  # stats.summarize()["overall"]
    server: dict | None
    refused_calls: float  # the server's count when scraped, else the generator's
    reconnects: int

    @property
    def p99_ms(self) -> float:
        return self.client["latency_ms"]["p99"]

    @property
    def drop_ratio(self) -> float:
        return self.client["drop_ratio"]

    @property
    def error_ratio(self) -> float:
        return self.client["error_ratio"]


async def capacity_search(
    target: str,
    sequences: list[list[bytes]],
    fps: float,
    objective: Objective,
    streams_to_try: list[int],
    hold_s: float,
    warm_up_s: float,
    metrics_url: str | None = None,
    mask_encoding: int = pb.MASK_ENCODING_JPEG,
    on_step: Callable[[Step], None] | None = None,
    progress_for: Callable[[int], Callable[[float], None] | None] = lambda streams: None,
) -> tuple[list[Step], int]:
    """Tries each stream count in turn until one fails; the answer is the last that held."""

    async def measure(streams: int) -> StepLoad:
        shape = LoadShape(streams, fps, duration_s=hold_s, ramp_up_s=1.0, warm_up_s=warm_up_s)
        before = scrape(metrics_url) if metrics_url else None
        result = await run_load(
            target, shape, sequences, progress=progress_for(streams), mask_encoding=mask_encoding
        )
        after = scrape(metrics_url) if metrics_url else None
        summary = summarize(result)
        view = asdict(server_view(before, after)) if before is not None else None
        refused = view["streams_refused"] if view else summary["refused_calls"]
        return StepLoad(summary["overall"], view, refused, summary["reconnects"])

    steps: list[Step] = []

    def record(trial: Trial[StepLoad]) -> None:
        steps.append(
            Step(trial.calls, trial.passed, trial.why, trial.figures.client, trial.figures.server)
        )
        if on_step:
            on_step(steps[-1])

    outcome = await search(measure, objective, StepUp(streams_to_try), record)
    return steps, outcome.held


def step_table(steps: list[Step]) -> str:
    lines = [
        f"{'streams':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'fps/stream':>10} {'dropped':>8} {'errors':>7} {'batch':>6}  verdict"
    ]
    for step in steps:
        c = step.client
        latency = c["latency_ms"]
        lines.append(
            f"{step.streams:>7} {latency['p50']:>8.1f} {latency['p95']:>8.1f} "
            f"{latency['p99']:>8.1f} {latency['max']:>8.1f} {c['fps_per_stream']:>10.1f} "
            f"{c['drop_ratio']:>8.1%} {c['error_ratio']:>7.1%} {c['mean_batch_size']:>6.1f}  "
            f"{'PASS' if step.passed else 'FAIL'} ({step.why})"
        )
    return "\n".join(lines)
