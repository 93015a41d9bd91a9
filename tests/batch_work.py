"""A batch runner on a clock moved by hand, with a frame path that needs no model: for the
unit tests of the batch loop, the engine's health and its probe."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from models.registry import model_spec
from service.batching.batcher import BatchPolicy
from service.batching.runner import BatchRunner
from service.errors import FrameError, FrameErrorReason
from service.metrics import ServiceMetrics
from tests.helpers import FakeClock

SPEC = model_spec("selfie-general")


class HalfWork:
    """A frame path whose batches answer 0.5 for every item, at once; an item named "bad"
    fails alone, as a corrupt frame in a batch decoded on a GPU does."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run_batch(self, items: Sequence[str]) -> list[float | FrameError]:
        self.batches.append(len(items))
        return [
            FrameError(FrameErrorReason.CORRUPT_JPEG, "bad frame") if item == "bad" else 0.5
            for item in items
        ]

    def warm_up(self) -> None:
        pass

    def probe(self) -> None:
        pass

    def padded_size(self, items: int) -> int:
        return items


def make_runner(clock: FakeClock, work: HalfWork, in_flight: int = 2) -> BatchRunner:
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_ms=10.0, max_batches_in_flight=in_flight)
    metrics = ServiceMetrics().for_model(SPEC.name)
    return BatchRunner(work, policy, metrics, SPEC.name, clock, failing_after_s=3.0)


async def queue(runner: BatchRunner, item: str) -> asyncio.Task:
    """Queues `item` and returns the task that awaits its share of the batch."""
    task = asyncio.create_task(runner.run(item))
    await asyncio.sleep(0)  # the task runs up to its wait for the batch
    return task
