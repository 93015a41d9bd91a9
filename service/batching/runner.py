"""Runs the batches that the batcher closes on one model's engine threads, and hands each item
its share of the result.

The loop takes every batch that is due while the engine has room, then sleeps until the batcher
says the next one is due (or until something changes: a frame on its way or queued, a batch
done, a stream gone). It never decides itself when a batch closes: `batcher.Batcher` does, and
it never knows what a batch holds: its `BatchWork` (the model's frame path) runs it. If the
loop ever dies, every item waiting for a batch, and every item after, gets an INTERNAL error
instead of waiting for ever.

Each batch's outcome goes to the engine's `EngineHealth`: a batch that raises is the engine's
failure, whatever it raised. While the engine is failing, no traffic reaches it (readiness is
NOT_SERVING), so its `probe.EngineProbe` runs the warm-up again now and then, alone on the
engine, until it recovers. The runner also adds up how long its engine threads were busy
(`occupied_s`, `occupancy.EngineOccupancy`), for the replica's measured load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from service.batching.batcher import Batch, Batcher, BatchPolicy, Outlook
from service.batching.cadence import StreamCadence
from service.batching.engine_health import EngineHealth
from service.batching.occupancy import EngineOccupancy
from service.batching.probe import EngineProbe
from service.clock import Clock
from service.errors import FrameError, internal_error
from service.metrics import ModelMetrics
from service.threads import name_this_thread

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchWork(Protocol[Item, Result]):
    """What runs a batch: the model's frame path."""

    def warm_up(self) -> None:
        """Runs every batch shape once, on an engine thread, before anything is served."""
        ...

    def probe(self) -> None:
        """Runs the smallest batch once, on an engine thread: whether a failing engine works."""
        ...

    def run_batch(self, items: Sequence[Item]) -> Sequence[Result | FrameError]:
        """One result per item, in order, on an engine thread; a FrameError fails that item
        alone."""
        ...

    def padded_size(self, items: int) -> int:
        """Items the model computes for a batch of `items`, padding included."""
        ...


@dataclass(frozen=True)
class BatchOutput(Generic[Result]):
    """One item's share of a batch that ran."""

    result: Result
    batch_size: int
    batch_wait_s: float
    inference_s: float


@dataclass(eq=False)
class _Queued(Generic[Item, Result]):
    item: Item
    output: asyncio.Future[BatchOutput[Result]]


class BatchRunner(Generic[Item, Result]):
    """One model's batch loop and engine threads: up to `policy.max_batches_in_flight`
    batches run side by side, each on its own engine thread.

    All times, the batcher's included, come from `clock`; the event loop's own clock only
    measures the relative sleep until the next batch is due.
    """

    def __init__(
        self,
        work: BatchWork[Item, Result],
        policy: BatchPolicy,
        metrics: ModelMetrics,
        name: str,
        clock: Clock = time.monotonic,
        *,
        failing_after_s: float,  # an engine failing every batch this long is failing
    ) -> None:
        self._work = work
        self._name = name
        self._engine_executor = ThreadPoolExecutor(
            max_workers=policy.max_batches_in_flight,
            thread_name_prefix=f"engine-{name}",
            initializer=name_this_thread,
            initargs=(f"engine-{name}",),
        )
        self._batcher: Batcher[_Queued[Item, Result]] = Batcher(policy, clock)
        self._max_batches_in_flight = policy.max_batches_in_flight
        self._occupancy = EngineOccupancy(policy.max_batches_in_flight, clock)
        self._metrics = metrics
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._frames_on_their_way = 0  # admitted and being prepared: they join soon
        self._cadences: set[StreamCadence] = set()
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._loop_failure: BaseException | None = None
        self.engine_health = EngineHealth(failing_after_s, clock)
        self._probe = EngineProbe(
            name, self.engine_health, self._occupancy, self._run_probe, self._wakeup.set
        )

    @property
    def frames_waiting(self) -> int:
        """Items queued and waiting for their batch to close."""
        return len(self._batcher)

    @property
    def batches_in_flight(self) -> int:
        return self._occupancy.in_flight

    @property
    def occupied_s(self) -> float:
        """Seconds the engine has been fully busy so far (see `EngineOccupancy`)."""
        return self._occupancy.occupied_s

    async def start(self) -> None:
        """Warms the model up on its own thread, then starts taking batches."""
        await self._warm_up()
        self._loop_task = asyncio.create_task(self._run_batches(), name=f"batches-{self._name}")
        self._loop_task.add_done_callback(self._on_loop_end)

    async def stop(self) -> None:
        await self._probe.stop()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        self._engine_executor.shutdown(wait=True)

    def open_stream(self) -> StreamCadence:
        """Registers a stream, whose frames the batcher may wait for."""
        cadence = StreamCadence()
        self._cadences.add(cadence)
        return cadence

    def close_stream(self, cadence: StreamCadence) -> None:
        self._cadences.discard(cadence)
        self._wakeup.set()  # a batch waiting for this stream's frame closes now

    @contextlib.contextmanager
    def frame_on_its_way(self) -> Iterator[None]:
        """Marks a frame being prepared for a batch: the batcher may wait for it until the
        block ends (prepared, or failed)."""
        self._frames_on_their_way += 1
        try:
            yield
        finally:
            self._frames_on_their_way -= 1
            self._wakeup.set()

    async def run(self, item: Item) -> BatchOutput[Result]:
        """Queues `item` for a batch and returns its share once the batch ran; an item whose
        caller goes away first leaves the queue."""
        if self._loop_failure is not None:
            raise internal_error(self._loop_failure, "the batch loop stopped")
        queued = _Queued[Item, Result](item, asyncio.get_running_loop().create_future())
        self._batcher.add(queued)
        self._wakeup.set()
        try:
            return await queued.output
        except asyncio.CancelledError:
            self._batcher.remove(queued)
            raise

    def _outlook(self) -> Outlook:
        due = [cadence.next_frame_due_at for cadence in self._cadences]
        known = tuple(at for at in due if at is not None)
        return Outlook(
            self._frames_on_their_way,
            known,
            streams_starting=len(due) - len(known),
            idle_engines=self._max_batches_in_flight - self._occupancy.in_flight,
        )

    def start_due_batches(self) -> float | None:
        """Starts every batch that is due while the engine has room; returns how long the loop
        may sleep before the next is due (None: until something changes)."""
        while not self._probe.probing and self._occupancy.in_flight < self._max_batches_in_flight:
            outlook = self._outlook()  # reads every open stream: once per look at the queue
            batch = self._batcher.take_batch(outlook)
            if batch is None:
                return self._batcher.seconds_until_due(outlook)
            self._occupancy.change(+1)
            task = asyncio.create_task(self._run_batch(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)
        # With the engine full, only a finished batch (which wakes us) frees it; the probe wakes
        # us once it is done.
        return None

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = self.start_due_batches()
            self._wakeup.clear()
            # A due batch wakes the loop as any change does: a timer that sets the event costs
            # the loop far less than `asyncio.timeout`, which cancels the task when it expires.
            timer = loop.call_later(timeout, self._wakeup.set) if timeout is not None else None
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _on_loop_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._loop_failure = task.exception()
        log.error("the batch loop of %s died", self._name, exc_info=self._loop_failure)
        failure = internal_error(self._loop_failure, "the batch loop stopped")
        for queued in self._batcher.take_all():
            if not queued.output.done():
                queued.output.set_exception(failure)

    async def _run_batch(self, batch: Batch[_Queued[Item, Result]]) -> None:
        # Items whose caller went away while the batch formed are not run.
        live = [
            (queued, waited_s)
            for queued, waited_s in zip(batch.items, batch.waited_s, strict=True)
            if not queued.output.done()
        ]
        try:
            if not live:
                return
            results, inference_s = await asyncio.get_running_loop().run_in_executor(
                self._engine_executor, self._run_work, [queued.item for queued, _ in live]
            )
            self.engine_health.batch_succeeded()
            self._metrics.observe_batch(len(live), self._work.padded_size(len(live)))
            for (queued, batch_wait_s), result in zip(live, results, strict=True):
                if queued.output.done():
                    continue
                if isinstance(result, FrameError):
                    queued.output.set_exception(result)
                else:
                    output = BatchOutput(result, len(live), batch_wait_s, inference_s)
                    queued.output.set_result(output)
        except Exception as error:
            log.exception("a batch of %d frames failed", len(live))
            self.engine_health.batch_failed(error)
            failure = internal_error(error, "inference failed")
            for queued, _ in live:
                if not queued.output.done():
                    queued.output.set_exception(failure)
        finally:
            self._occupancy.change(-1)
            self._wakeup.set()

    async def _warm_up(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._engine_executor, self._work.warm_up)

    async def _run_probe(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._engine_executor, self._work.probe)

    def _run_work(self, items: list[Item]) -> tuple[Sequence[Result | FrameError], float]:
        started = self._clock()
        results = self._work.run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"the batch gave {len(results)} results for {len(items)} frames")
        return results, self._clock() - started
