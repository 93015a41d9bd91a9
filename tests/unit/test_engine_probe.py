"""The engine probe of the batch runner: while the engine fails, it runs the probe batch alone
on the engine (after the batches in flight, and before any new one), turns the engine healthy
when the probe succeeds, and never starts once the runner stops. Real engine threads and the
event loop's own sleep between probes; the engine's health on a clock moved by hand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from service.batching.probe import MIN_PROBE_INTERVAL_S
from service.batching.runner import BatchRunner
from service.errors import EngineFailure, FrameError
from tests.batch_work import HalfWork, make_runner, queue
from tests.helpers import FakeClock


class GatedWork(HalfWork):
    """An engine that fails while `broken`, whose batches hold their thread until `gate` is
    open, and that logs what ran and whether the probe ever shared the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.gate = threading.Event()
        self.gate.set()
        self.ran: list[str] = []
        self.probe_started = threading.Event()
        self.overlaps = 0
        self._lock = threading.Lock()
        self._running: list[str] = []

    def _enter(self, what: str) -> None:
        with self._lock:
            if self._running and "probe" in (*self._running, what):
                self.overlaps += 1
            self._running.append(what)
            self.ran.append(what)

    def _leave(self, what: str) -> None:
        with self._lock:
            self._running.remove(what)

    def run_batch(self, items: Sequence[str]) -> list[float | FrameError]:
        self._enter("batch")
        try:
            self.gate.wait(5.0)
            if self.broken:
                raise EngineFailure("CUDA error: an illegal memory access was encountered")
            return super().run_batch(items)
        finally:
            self._leave("batch")

    def probe(self) -> None:
        self._enter("probe")
        self.probe_started.set()
        try:
            time.sleep(0.02)  # long enough for a batch started meanwhile to overlap it
            if self.broken:
                raise EngineFailure("still broken")
        finally:
            self._leave("probe")


async def start_batch(runner: BatchRunner, clock: FakeClock, item: str) -> asyncio.Task:
    task = await queue(runner, item)
    clock.advance(0.010)  # the batch is due
    runner.start_due_batches()
    return task


def failing_runner() -> tuple[FakeClock, GatedWork, BatchRunner]:
    clock, work = FakeClock(), GatedWork()
    runner = make_runner(clock, work, in_flight=2)
    runner.engine_health.failing_after_s = 0.0  # one failed batch: failing, and a probe starts
    return clock, work, runner


async def test_the_probe_waits_for_the_batches_in_flight_and_starts_none_meanwhile() -> None:
    clock, work, runner = failing_runner()
    work.broken = True
    await asyncio.gather(await start_batch(runner, clock, "a"), return_exceptions=True)
    assert runner.engine_health.failing
    work.gate.clear()  # the next batch holds its engine thread until the gate opens
    held = await start_batch(runner, clock, "b")
    await asyncio.sleep(MIN_PROBE_INTERVAL_S * 2)  # the probe is due, and waits for "b"
    assert work.ran == ["batch", "batch"]
    later = await queue(runner, "c")
    clock.advance(0.010)
    assert runner.start_due_batches() is None  # a thread is free, yet the probe is next
    assert runner.batches_in_flight == 1
    work.gate.set()
    await asyncio.gather(held, return_exceptions=True)
    assert await asyncio.to_thread(work.probe_started.wait, 5.0)
    assert work.ran == ["batch", "batch", "probe"]  # after "b", before "c"
    recovered = asyncio.Event()
    runner.engine_health.on_change(lambda failing: None if failing else recovered.set())
    work.broken = False
    await asyncio.wait_for(recovered.wait(), 5.0)  # a probe succeeded
    runner.start_due_batches()
    assert (await later).result == 0.5
    assert work.overlaps == 0
    await runner.stop()


async def test_no_probe_starts_once_the_runner_stops() -> None:
    clock, work, runner = failing_runner()
    work.broken = True
    work.gate.clear()
    held = await start_batch(runner, clock, "a")
    stopping = asyncio.create_task(runner.stop())  # waits for "a", which is about to fail
    await asyncio.sleep(0.05)
    work.gate.set()
    await stopping
    assert isinstance((await asyncio.gather(held, return_exceptions=True))[0], FrameError)
    assert runner.engine_health.failing  # failed after the stop began
    probes = [task for task in asyncio.all_tasks() if task.get_name().startswith("probe-")]
    assert probes == []
