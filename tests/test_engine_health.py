"""The engine's health policy on a clock moved by hand: failing only after every batch failed
for `failing_after_s`, recovered by one success, and fatal at once on an unrecoverable failure."""

from __future__ import annotations

from service.batching.engine_health import EngineHealth
from service.errors import EngineFailure
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
