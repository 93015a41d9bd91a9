"""The batch loop on a clock moved by hand: it starts a batch exactly when the batcher says one
is due, and a loop that dies answers its waiting frames instead of leaving them hanging."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.registry import model_spec
from service.batching.batcher import BatchPolicy
from service.batching.runner import BatchRunner
from service.errors import FrameError, FrameErrorReason
from service.metrics import ServiceMetrics
from tests.test_batcher import FakeClock

SPEC = model_spec("selfie-general")


class HalfEngine:
    """Answers 0.5 everywhere, at once."""

    name = "half"
    device = "cpu"
    spec = SPEC
    batch_sizes = (1, 2, 4)
    max_batch_size = None

    def __init__(self) -> None:
        self.batches: list[int] = []

    def infer(self, frames: np.ndarray) -> np.ndarray:
        self.batches.append(len(frames))
        return np.full(frames.shape[:3], 0.5, np.float32)

    def warm_up(self) -> None:
        pass

    def padded_size(self, frames: int) -> int:
        return frames


def pixels() -> np.ndarray:
    return np.zeros((SPEC.input_height, SPEC.input_width, 3), np.uint8)


def make_runner(clock: FakeClock, engine: HalfEngine, in_flight: int = 2) -> BatchRunner:
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_ms=10.0, max_batches_in_flight=in_flight)
    return BatchRunner(engine, policy, ServiceMetrics().for_model(SPEC.name), clock)


async def test_the_loop_starts_a_batch_when_the_batcher_says_it_is_due() -> None:
    clock, engine = FakeClock(), HalfEngine()
    runner = make_runner(clock, engine, in_flight=1)
    runner.open_stream()  # its frame rate is not known yet: a batch waits the whole delay
    frame = runner.add(pixels())
    assert runner.start_due_batches() == pytest.approx(0.010)
    clock.advance(0.009)
    assert runner.start_due_batches() == pytest.approx(0.001)
    assert runner.batches_in_flight == 0 and runner.frames_waiting == 1
    clock.advance(0.001)
    assert runner.start_due_batches() is None  # nothing waits: sleep until woken
    assert runner.batches_in_flight == 1
    output = await frame.output
    assert output.batch_size == 1 and output.batch_wait_s == pytest.approx(0.010)
    assert engine.batches == [1]
    await runner.stop()


async def test_a_full_engine_takes_no_batch_until_one_finishes() -> None:
    clock, engine = FakeClock(), HalfEngine()
    runner = make_runner(clock, engine)  # two batches in flight at most
    frames = [runner.add(pixels()) for _ in range(12)]  # full batches of 4 are due at once
    assert runner.start_due_batches() is None  # the engine is full: wait for a batch to end
    # Both engine threads idle: the first batch is spread over them (2 frames), then the
    # second, with one idle, takes a full 4; the rest waits for them to end.
    assert runner.batches_in_flight == 2 and runner.frames_waiting == 6
    await asyncio.wait_for(asyncio.gather(*(frame.output for frame in frames[:6])), 10)
    await asyncio.sleep(0)
    assert runner.batches_in_flight == 0 and runner.frames_waiting == 6
    runner.start_due_batches()
    await asyncio.wait_for(asyncio.gather(*(frame.output for frame in frames[6:])), 10)
    # Each round's two batches run on two threads at once: either may reach the engine first.
    assert sorted(engine.batches[:2]) == sorted(engine.batches[2:]) == [2, 4]
    await runner.stop()


async def test_when_the_loop_dies_waiting_and_later_frames_get_an_internal_error() -> None:
    clock, engine = FakeClock(), HalfEngine()
    runner = make_runner(clock, engine)
    runner.open_stream()  # holds the first frame for the whole delay
    waiting = runner.add(pixels())

    def broken() -> float | None:
        raise RuntimeError("a bug in the loop")

    runner.start_due_batches = broken  # type: ignore[method-assign]
    await runner.start()
    with pytest.raises(FrameError, match="the batch loop stopped: a bug in the loop") as caught:
        await asyncio.wait_for(waiting.output, timeout=5)
    assert caught.value.reason == FrameErrorReason.INTERNAL
    with pytest.raises(FrameError, match="the batch loop stopped"):
        runner.add(pixels())
    await runner.stop()
