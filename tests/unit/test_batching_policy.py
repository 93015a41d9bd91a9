"""The batching policy on a clock moved by hand: no sleeping."""

from __future__ import annotations

import pytest

from service.batching.batcher import Batcher, BatchPolicy, Outlook
from service.batching.cadence import StreamCadence
from tests.helpers import FakeClock


def make_batcher(max_batch_size: int = 4, max_queue_delay_ms: float = 10.0):
    clock = FakeClock()
    return Batcher[str](BatchPolicy(max_batch_size, max_queue_delay_ms), clock), clock


def test_nothing_waiting_means_no_batch_and_no_deadline() -> None:
    batcher, _ = make_batcher()
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() is None


def test_a_lone_frame_waits_exactly_max_queue_delay() -> None:
    batcher, clock = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    clock.advance(0.009)
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() == pytest.approx(0.001)
    clock.advance(0.001)
    batch = batcher.take_batch()
    assert batch is not None
    assert batch.items == ("a",)
    assert batch.waited_s == pytest.approx((0.010,))
    assert len(batcher) == 0


def test_a_full_batch_closes_at_once_and_the_rest_keeps_its_age() -> None:
    batcher, clock = make_batcher(max_batch_size=3, max_queue_delay_ms=10.0)
    for name in "abcde":
        batcher.add(name)
        clock.advance(0.001)
    assert batcher.seconds_until_due() == 0.0
    batch = batcher.take_batch()
    assert batch is not None
    assert batch.items == ("a", "b", "c")
    # "d" arrived 2 ms ago: it waits 8 ms more for company.
    assert batcher.take_batch() is None
    assert batcher.seconds_until_due() == pytest.approx(0.008)
    clock.advance(0.008)
    assert batcher.take_batch().items == ("d", "e")


def test_the_oldest_frame_sets_the_deadline_for_the_whole_batch() -> None:
    batcher, clock = make_batcher(max_batch_size=8, max_queue_delay_ms=10.0)
    batcher.add("old")
    clock.advance(0.006)
    batcher.add("new")
    clock.advance(0.004)
    batch = batcher.take_batch()
    assert batch.items == ("old", "new")
    assert batch.waited_s == pytest.approx((0.010, 0.004))


def test_zero_delay_runs_whatever_is_waiting() -> None:
    batcher, _ = make_batcher(max_queue_delay_ms=0.0)
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
        (4, -1.0, "max_queue_delay_ms must not be negative; was -1.0"),
    ],
)
def test_bad_policies_are_refused_with_the_bad_value(size: int, delay: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(size, delay)


def test_with_nothing_on_its_way_a_lone_frame_closes_at_once() -> None:
    batcher, _ = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    nothing = Outlook(frames_being_prepared=0, next_frames_due_at=())
    assert batcher.seconds_until_due(nothing) == 0.0
    batch = batcher.take_batch(nothing)
    assert batch is not None and batch.items == ("a",)
    assert batch.waited_s == (0.0,)  # closed before the delay


def test_a_frame_being_decoded_is_waited_for_up_to_the_delay() -> None:
    batcher, clock = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    decoding = Outlook(frames_being_prepared=1, next_frames_due_at=())
    clock.advance(0.004)
    assert batcher.take_batch(decoding) is None
    assert batcher.seconds_until_due(decoding) == pytest.approx(0.006)
    clock.advance(0.006)
    batch = batcher.take_batch(decoding)
    assert batch is not None and batch.waited_s == pytest.approx((0.010,))


def test_a_stream_due_before_the_delay_is_waited_for_until_it_is_late() -> None:
    batcher, clock = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    soon = Outlook(
        frames_being_prepared=0, next_frames_due_at=(clock.now + 0.003, clock.now + 0.050)
    )
    assert batcher.seconds_until_due(soon) == pytest.approx(0.003)
    assert batcher.take_batch(soon) is None
    clock.advance(0.003)  # its frame did not come: nothing else can join in time
    batch = batcher.take_batch(soon)
    assert batch is not None and batch.items == ("a",)
    assert batch.waited_s == pytest.approx((0.003,))  # closed before the delay


def test_streams_due_only_after_the_delay_do_not_hold_the_batch() -> None:
    batcher, clock = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    later = Outlook(frames_being_prepared=0, next_frames_due_at=(clock.now + 0.033,))
    batch = batcher.take_batch(later)
    assert batch is not None and batch.waited_s == (0.0,)


def test_a_stream_whose_rate_is_not_known_yet_is_waited_for_up_to_the_delay() -> None:
    batcher, clock = make_batcher(max_queue_delay_ms=10.0)
    batcher.add("a")
    starting = Outlook(frames_being_prepared=0, next_frames_due_at=(), streams_starting=1)
    assert batcher.seconds_until_due(starting) == pytest.approx(0.010)
    clock.advance(0.010)
    batch = batcher.take_batch(starting)
    assert batch is not None and batch.waited_s == pytest.approx((0.010,))


def test_a_stream_cadence_follows_its_frame_gaps_and_ignores_pauses() -> None:
    cadence = StreamCadence()
    cadence.frame_started(10.0)
    assert cadence.next_frame_due_at is None  # one frame says nothing of the rate
    cadence.frame_started(10.033)
    assert cadence.next_frame_due_at == pytest.approx(10.066)
    cadence.frame_started(15.0)  # the caller paused: the gap is not its frame rate
    assert cadence.next_frame_due_at == pytest.approx(15.033)
    cadence.frame_started(15.053)  # a late frame moves the estimate a little, not all the way
    assert 15.053 + 0.033 < cadence.next_frame_due_at < 15.053 + 0.053


def test_with_an_idle_engine_for_every_frame_nothing_waits_for_company() -> None:
    batcher, clock = make_batcher(max_batch_size=8, max_queue_delay_ms=10.0)
    batcher.add("a")
    # Two batches could start at once, and only one more frame is due: each gets its own.
    two_idle = Outlook(0, next_frames_due_at=(clock.now + 0.002,), idle_engines=2)
    batch = batcher.take_batch(two_idle)
    assert batch is not None and batch.items == ("a",) and batch.waited_s == (0.0,)
    # With one idle engine the same frame waits for the one due in 2 ms.
    batcher.add("b")
    one_idle = Outlook(0, next_frames_due_at=(clock.now + 0.002,), idle_engines=1)
    assert batcher.take_batch(one_idle) is None
    assert batcher.seconds_until_due(one_idle) == pytest.approx(0.002)


def test_frames_waiting_are_spread_over_the_idle_engines() -> None:
    batcher, _ = make_batcher(max_batch_size=8, max_queue_delay_ms=0.0)
    for name in "abcde":
        batcher.add(name)
    first = batcher.take_batch(Outlook(0, (), idle_engines=2))
    second = batcher.take_batch(Outlook(0, (), idle_engines=1))
    assert first is not None and first.items == ("a", "b", "c")
    assert second is not None and second.items == ("d", "e")
