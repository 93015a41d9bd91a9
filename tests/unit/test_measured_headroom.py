"""The replica's measured headroom on a clock moved by hand: engine occupancy, sustained frame
drops against a caller's burst, and the utilisation the autoscaler reads."""

from __future__ import annotations

from dataclasses import dataclass

from service.streams.headroom import FrameCounts, Headroom
from tests.helpers import FakeClock


@dataclass
class Engine:
    occupied_s: float = 0.0


class Replica:
    """What the headroom reads: an engine's busy seconds and the frames answered."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.engine = Engine()
        self.frames = FrameCounts(0, 0)
        self.headroom = Headroom(2.0, lambda: [self.engine], lambda: self.frames, self.clock)
        self.headroom.sample()  # the sampler runs from the start

    def run(self, seconds: float, busy: float, fps: float, dropped_fps: float = 0.0) -> None:
        """Moves time on, one sample interval at a time, with the engine busy `busy` of it."""
        step = self.headroom.sample_interval_s
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.engine.occupied_s += busy * step
            answered = self.frames.answered + round(fps * step)
            self.frames = FrameCounts(answered, self.frames.dropped + round(dropped_fps * step))
            self.headroom.sample()


def test_a_lightly_loaded_replica_has_room_and_reports_its_occupancy() -> None:
    replica = Replica()
    replica.run(3.0, busy=0.3, fps=120)
    load = replica.headroom.load
    assert abs(load.engine_occupancy - 0.3) < 1e-9
    assert load.full_because is None
    assert abs(replica.headroom.utilisation - 0.3) < 1e-9


def test_an_engine_at_capacity_is_full() -> None:
    replica = Replica()
    replica.run(3.0, busy=0.99, fps=300)
    reason = replica.headroom.load.full_because
    assert reason is not None and "engine is at capacity (busy 99%" in reason
    assert replica.headroom.utilisation == 1.0


def test_sustained_drops_are_full_but_one_callers_burst_is_not() -> None:
    burst = Replica()
    burst.run(0.25, busy=0.6, fps=400, dropped_fps=360)  # a burst of frames sent at once
    burst.run(1.5, busy=0.1, fps=30)  # the burst is still in the window
    assert burst.headroom.load.dropped_ratio > 0.2
    assert burst.headroom.load.full_because is None

    overloaded = Replica()
    overloaded.run(3.0, busy=0.8, fps=300, dropped_fps=40)
    reason = overloaded.headroom.load.full_because
    assert reason is not None and "dropping frames for its streams (13%" in reason
    assert overloaded.headroom.utilisation == 1.0


def test_the_stream_count_counts_toward_utilisation_and_the_window_forgets() -> None:
    replica = Replica()
    replica.headroom.streams_changed(3, 4)
    replica.run(1.0, busy=0.2, fps=60)
    assert replica.headroom.utilisation == 0.75
    replica.run(2.0, busy=1.0, fps=300)
    assert replica.headroom.utilisation == 1.0
    replica.run(2.5, busy=0.1, fps=60)  # the busy seconds have left the window
    assert abs(replica.headroom.load.engine_occupancy - 0.1) < 1e-9
    assert replica.headroom.utilisation == 0.75


async def test_a_failed_sample_is_logged_and_the_sampler_goes_on(caplog) -> None:
    import asyncio

    from service.app import sample_load

    engine = Engine()
    calls = 0
    sampled_after_the_failure = asyncio.Event()

    def frames() -> FrameCounts:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a model went away mid-sample")
        if calls == 4:
            sampled_after_the_failure.set()
        return FrameCounts(calls * 10, 0)

    headroom = Headroom(0.08, lambda: [engine], frames)  # a sample every 10 ms, real clock
    sampler = asyncio.create_task(sample_load(headroom))
    try:
        async with asyncio.timeout(5):  # a sampler that died on the failure never gets here
            await sampled_after_the_failure.wait()
    finally:
        sampler.cancel()
    assert "sampling the replica's load failed" in caplog.text
    assert "a model went away mid-sample" in caplog.text
