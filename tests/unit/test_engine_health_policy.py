"""The engine's health policy on a clock moved by hand: failing only after every batch failed
for `failing_after_s`, recovered by one success, and fatal at once on an unrecoverable failure;
and the batch runner that feeds it (a raising batch is the engine's failure, a bad frame is not)
and the occupancy that adds up its engine threads' busy time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.batching.engine_health import EngineHealth
from service.batching.occupancy import EngineOccupancy
from service.batching.runner import BatchRunner
from service.errors import EngineFailure, FrameError, FrameErrorReason
from tests.batch_work import HalfWork, make_runner, queue
from tests.helpers import FakeClock


def health_on(clock: FakeClock) -> tuple[EngineHealth, list[bool]]:
    health = EngineHealth(3.0, clock)
    changes: list[bool] = []
    health.on_change(changes.append)
    return health, changes


def test_an_engine_that_fails_every_batch_for_the_window_turns_failing() -> None:
    clock = FakeClock()
    health, changes = health_on(clock)
    health.batch_failed(EngineFailure("CUDA error: an illegal memory access was encountered"))
    clock.advance(2.9)
    health.batch_failed(EngineFailure("CUDA error: an illegal memory access was encountered"))
    assert not health.failing and changes == []
    clock.advance(0.1)
    health.batch_failed(RuntimeError("any exception from run_batch counts"))
    assert health.failing and changes == [True]
    assert health.last_failure == "RuntimeError: any exception from run_batch counts"
    assert health.failing_for_s == 3.0
    health.batch_failed(EngineFailure("again"))
    assert changes == [True]  # told once


def test_one_success_resets_the_count_and_recovers_a_failing_engine() -> None:
    clock = FakeClock()
    health, changes = health_on(clock)
    health.batch_failed(EngineFailure("blip"))
    clock.advance(2.0)
    health.batch_succeeded()
    clock.advance(2.0)
    health.batch_failed(EngineFailure("another blip"))  # 4 s after the first, not 3 of failing
    assert not health.failing and health.failing_for_s == 0.0
    clock.advance(3.0)
    health.batch_failed(EngineFailure("still"))
    assert health.failing
    health.batch_succeeded()
    assert not health.failing and changes == [True, False]
    assert (health.batches_failed, health.batches_succeeded) == (3, 2)


def test_two_failures_far_apart_are_no_run_of_failures() -> None:
    clock = FakeClock()
    health, changes = health_on(clock)
    health.batch_failed(EngineFailure("one blip"))
    clock.advance(600.0)  # idle: no batch ran
    health.batch_failed(EngineFailure("another blip, ten minutes later"))
    assert not health.failing and health.failing_for_s == 0.0
    for _ in range(3):  # failing all along now, a batch a second
        clock.advance(1.0)
        health.batch_failed(EngineFailure("again"))
    assert health.failing and changes == [True]


def test_an_unrecoverable_failure_is_fatal_at_once() -> None:
    clock = FakeClock()
    health, _changes = health_on(clock)
    fatal: list[BaseException] = []
    health.on_fatal(fatal.append)
    health.batch_failed(EngineFailure("recoverable"))
    assert fatal == [] and health.fatal is None
    lost = EngineFailure("the CUDA context is lost", recoverable=False)
    health.batch_failed(lost)
    health.batch_failed(EngineFailure("lost again", recoverable=False))
    assert fatal == [lost] and health.fatal is lost  # told once


class BreakableHalfWork(HalfWork):
    """HalfWork whose engine raises for the whole batch while `broken`."""

    broken = False

    def run_batch(self, items: Sequence[str]) -> list[float | FrameError]:
        if self.broken:
            raise EngineFailure("CUDA error: an illegal memory access was encountered")
        return super().run_batch(items)


async def run_one(runner: BatchRunner, clock: FakeClock, item: str) -> object:
    task = await queue(runner, item)
    clock.advance(0.010)  # the batch is due
    runner.start_due_batches()
    return (await asyncio.gather(task, return_exceptions=True))[0]


async def test_the_runner_counts_a_raising_batch_against_the_engine_and_a_bad_frame_not() -> None:
    clock, work = FakeClock(), BreakableHalfWork()
    runner = make_runner(clock, work, in_flight=1)
    runner.engine_health.failing_after_s = 1.0
    bad = await run_one(runner, clock, "bad")
    assert isinstance(bad, FrameError)  # the frame's fault: the engine ran the batch
    assert (runner.engine_health.batches_succeeded, runner.engine_health.batches_failed) == (1, 0)
    work.broken = True
    for _ in range(3):  # every batch fails, one each 0.5 s
        failed = await run_one(runner, clock, "a")
        assert isinstance(failed, FrameError) and failed.reason == FrameErrorReason.INTERNAL
        clock.advance(0.49)
    assert runner.engine_health.failing and runner.engine_health.batches_failed == 3
    work.broken = False
    assert (await run_one(runner, clock, "a")).result == 0.5  # type: ignore[attr-defined]
    assert not runner.engine_health.failing
    await runner.stop()


def test_the_occupancy_adds_up_how_long_the_engine_threads_were_busy() -> None:
    clock = FakeClock()
    occupancy = EngineOccupancy(2, clock)
    assert occupancy.occupied_s == 0.0 and occupancy.idle.is_set()
    occupancy.change(+1)  # one of two threads busy for 1 s
    assert not occupancy.idle.is_set()
    clock.advance(1.0)
    assert occupancy.occupied_s == pytest.approx(0.5)
    occupancy.change(+1)  # both busy for 1 s more
    clock.advance(1.0)
    occupancy.change(-2)
    clock.advance(5.0)  # idle
    assert occupancy.occupied_s == pytest.approx(1.5) and occupancy.idle.is_set()


async def test_the_runner_counts_its_batches_in_its_occupancy() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work, in_flight=2)
    task = await queue(runner, "a")
    clock.advance(0.010)
    runner.start_due_batches()
    assert runner.batches_in_flight == 1
    clock.advance(1.0)  # the batch holds one of the two threads for 1 s
    await task
    clock.advance(1.0)
    assert runner.batches_in_flight == 0 and runner.occupied_s == pytest.approx(0.5)
    await runner.stop()
