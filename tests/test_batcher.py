"""The batching policy on a clock moved by hand: no sleeping."""

from __future__ import annotations

import pytest

from service.batcher import Batcher, BatchPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_batcher(max_batch_size: int = 4, max_queue_delay_s: float = 0.010):
    clock = FakeClock()
    return Batcher[str](BatchPolicy(max_batch_size, max_queue_delay_s), clock), clock


def test_nothing_waiting_means_no_batch_and_no_deadline() -> None:
    batcher, _ = make_batcher()
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() is None


def test_a_lone_frame_waits_exactly_max_queue_delay() -> None:
    batcher, clock = make_batcher(max_queue_delay_s=0.010)
    batcher.add("a")
    clock.advance(0.009)
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() == pytest.approx(0.001)
    clock.advance(0.001)
    batch = batcher.take_batch()
    assert batch is not None
    assert batch.items == ("a",)
    assert batch.closed_because == "delay"
    assert batch.waited_s == pytest.approx((0.010,))
    assert len(batcher) == 0


def test_a_full_batch_closes_at_once_and_the_rest_keeps_its_age() -> None:
    batcher, clock = make_batcher(max_batch_size=3, max_queue_delay_s=0.010)
    for name in "abcde":
        batcher.add(name)
        clock.advance(0.001)
    assert batcher.seconds_until_due() == 0.0
    batch = batcher.take_batch()
    assert batch is not None
    assert batch.items == ("a", "b", "c")
    assert batch.closed_because == "full"
    # "d" arrived 2 ms ago: it waits 8 ms more for company.
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() == pytest.approx(0.008)
    clock.advance(0.008)
    assert batcher.take_batch().items == ("d", "e")


def test_the_oldest_frame_sets_the_deadline_for_the_whole_batch() -> None:
    batcher, clock = make_batcher(max_batch_size=8, max_queue_delay_s=0.010)
    batcher.add("old")
    clock.advance(0.006)
    batcher.add("new")
    clock.advance(0.004)
    batch = batcher.take_batch()
    assert batch.items == ("old", "new")
    assert batch.waited_s == pytest.approx((0.010, 0.004))


def test_zero_delay_runs_whatever_is_waiting() -> None:
    batcher, _ = make_batcher(max_queue_delay_s=0.0)
    batcher.add("a")
    batcher.add("b")
    assert batcher.take_batch().items == ("a", "b")


def test_a_removed_frame_never_reaches_a_batch() -> None:
    batcher, clock = make_batcher()
    batcher.add("a")
    batcher.add("b")
    assert batcher.remove("a") is True
    assert batcher.remove("a") is False
    clock.advance(1.0)
    assert batcher.take_batch().items == ("b",)


@pytest.mark.parametrize(
    ("size", "delay", "message"),
    [
        (0, 0.001, "max_batch_size must be positive; was 0"),
        (4, -1.0, "max_queue_delay_s must not be negative; was -1.0"),
    ],
)
def test_bad_policies_are_refused_with_the_bad_value(size: int, delay: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(size, delay)
