"""How many calls one replica carries: the largest number of streams at F FPS whose p99
latency stays within the objective with at most `max_drop_ratio` of frames dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from loadtest.generator import LoadShape, run_load
from loadtest.server_metrics import scrape, server_view
from loadtest.stats import summarize
from segmentation.v1 import segmentation_pb2 as pb


@dataclass(frozen=True)
class Objective:
    p99_ms: float = 100.0
    max_drop_ratio: float = 0.01
    max_error_ratio: float = 0.0

    def verdict(self, overall: dict) -> tuple[bool, str]:
        p99 = overall["latency_ms"]["p99"]
        if overall["error_ratio"] > self.max_error_ratio:
            return False, f"errors {overall['error_ratio']:.1%}"
        if overall["drop_ratio"] > self.max_drop_ratio:
            return False, f"dropped {overall['drop_ratio']:.1%} > {self.max_drop_ratio:.0%}"
        if not p99 <= self.p99_ms:  # NaN (nothing answered) fails too
            return False, f"p99 {p99:.0f} ms > {self.p99_ms:.0f} ms"
        return True, "holds"


@dataclass
class Step:
    streams: int
    passed: bool
    why: str
    client: dict  # stats.summarize()["overall"]
    server: dict | None  # ServerView as a dict, when the metrics were scraped


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
    steps: list[Step] = []
    answer = 0
    for streams in streams_to_try:
        shape = LoadShape(streams, fps, duration_s=hold_s, ramp_up_s=1.0, warm_up_s=warm_up_s)
        before = scrape(metrics_url) if metrics_url else None
        result = await run_load(
            target, shape, sequences, progress=progress_for(streams), mask_encoding=mask_encoding
        )
        after = scrape(metrics_url) if metrics_url else None
        summary = summarize(result)
        overall = summary["overall"]
        passed, why = objective.verdict(overall)
        view = asdict(server_view(before, after)) if before is not None else None
        refused = view["streams_refused"] if view else summary["refused_calls"]
        if passed and refused:
            # A refused call is a call not carried, whatever the figures of the others.
            passed, why = False, f"refused {refused:.0f} calls"
        if passed and summary["reconnects"]:
            # A replica that refused or lost streams does not carry this load, whatever the
            # figures of the frames that got through.
            passed, why = False, f"reconnects {summary['reconnects']}"
        steps.append(Step(streams, passed, why, overall, view))
        if on_step:
            on_step(steps[-1])
        if not passed:
            break
        answer = streams
    return steps, answer


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
