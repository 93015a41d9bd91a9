"""The batch loop on a clock moved by hand: it starts a batch exactly when the batcher says one
is due, a frame the batch fails fails alone, and a loop that dies answers its waiting frames
instead of leaving them hanging."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import FrameError, FrameErrorReason
from tests.batch_work import HalfWork, make_runner, queue
from tests.helpers import FakeClock


async def test_the_loop_starts_a_batch_when_the_batcher_says_it_is_due() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work, in_flight=1)
    runner.open_stream()  # its frame rate is not known yet: a batch waits the whole delay
    frame = await queue(runner, "a")
    assert runner.start_due_batches() == pytest.approx(0.010)
    clock.advance(0.009)
    assert runner.start_due_batches() == pytest.approx(0.001)
    assert runner.batches_in_flight == 0 and runner.frames_waiting == 1
    clock.advance(0.001)
    assert runner.start_due_batches() is None  # nothing waits: sleep until woken
    assert runner.batches_in_flight == 1
    output = await frame
    assert output.result == 0.5
    assert output.batch_size == 1 and output.batch_wait_s == pytest.approx(0.010)
    assert work.batches == [1]
    await runner.stop()


async def test_a_full_engine_takes_no_batch_until_one_finishes() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work)  # two batches in flight at most
    frames = [await queue(runner, "a") for _ in range(12)]  # full batches of 4 are due at once
    assert runner.start_due_batches() is None  # the engine is full: wait for a batch to end
    # Both engine threads idle: the first batch is spread over them (2 frames), then the
    # second, with one idle, takes a full 4; the rest waits for them to end.
    assert runner.batches_in_flight == 2 and runner.frames_waiting == 6
    await asyncio.wait_for(asyncio.gather(*frames[:6]), 10)
    await asyncio.sleep(0)
    assert runner.batches_in_flight == 0 and runner.frames_waiting == 6
    runner.start_due_batches()
    await asyncio.wait_for(asyncio.gather(*frames[6:]), 10)
    # Each round's two batches run on two threads at once: either may reach the engine first.
    assert sorted(work.batches[:2]) == sorted(work.batches[2:]) == [2, 4]
    await runner.stop()


async def test_when_the_loop_dies_waiting_and_later_frames_get_an_internal_error() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work)
    runner.open_stream()  # holds the first frame for the whole delay
    waiting = await queue(runner, "a")

    def broken() -> float | None:
        raise RuntimeError("a bug in the loop")

    runner.start_due_batches = broken  # type: ignore[method-assign]
    await runner.start()
    with pytest.raises(FrameError, match="the batch loop stopped: a bug in the loop") as caught:
        await asyncio.wait_for(waiting, timeout=5)
    assert caught.value.reason == FrameErrorReason.INTERNAL
    with pytest.raises(FrameError, match="the batch loop stopped"):
        await runner.run("b")
    await runner.stop()


async def test_a_frame_the_batch_fails_fails_alone_and_its_neighbours_get_their_results() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work, in_flight=1)
    frames = [await queue(runner, item) for item in ("a", "bad", "c", "d")]  # a full batch
    runner.start_due_batches()
    results = await asyncio.wait_for(asyncio.gather(*frames, return_exceptions=True), 10)
    assert work.batches == [4]
    assert [r.result for n, r in enumerate(results) if n != 1] == [0.5, 0.5, 0.5]
    assert isinstance(results[1], FrameError) and results[1].reason == "corrupt_jpeg"
    assert all(r.batch_size == 4 for n, r in enumerate(results) if n != 1)
    await runner.stop()


async def test_a_frame_on_its_way_holds_the_batch_until_it_is_prepared() -> None:
    clock, work = FakeClock(), HalfWork()
    runner = make_runner(clock, work, in_flight=1)
    first = await queue(runner, "a")
    with runner.frame_on_its_way():
        assert runner.start_due_batches() == pytest.approx(0.010), "waits for the coming frame"
    assert runner.start_due_batches() is None, "nothing else is coming: the batch runs now"
    assert (await first).batch_size == 1
    await runner.stop()
