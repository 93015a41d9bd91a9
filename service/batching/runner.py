"""Runs the batches that the batcher closes on one model's engine threads, and hands each frame
its output.

The loop takes every batch that is due while the engine has room, then sleeps until the batcher
says the next one is due (or until something changes: a frame decoded or queued, a batch done,
a stream gone). It never decides itself when a batch closes: `batcher.Batcher` does. If the
loop ever dies, every frame waiting for a batch, and every frame after, gets an INTERNAL error
instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.batching.batcher import Batch, Batcher, BatchPolicy, Clock, Outlook
from service.engines.base import Engine
from service.errors import internal_error
from service.metrics import ModelMetrics
from service.threads import name_this_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutput:
    """One frame's share of a batch that ran."""

    alpha: np.ndarray  # float32 (H, W) at the model's input size
    batch_size: int
    batch_wait_s: float
    inference_s: float


@dataclass(eq=False)
class FrameForBatch:
    """A decoded frame in the batcher's queue; `output` resolves when its batch has run."""

    pixels: np.ndarray
    output: asyncio.Future[BatchOutput]


class StreamCadence:
    """When one stream's next frame is due, from the gaps between its frames so far, so that
    the batcher knows whether waiting can bring it into a batch."""

    _SMOOTHING = 0.2  # weight of the newest gap in the running estimate
    _LONGEST_GAP_S = 1.0  # a longer gap is a pause, not the stream's frame rate

    def __init__(self) -> None:
        self._last_at: float | None = None
        self._interval_s: float | None = None

    def frame_arrived(self, now: float) -> None:
        if self._last_at is not None and now - self._last_at < self._LONGEST_GAP_S:
            gap = now - self._last_at
            if self._interval_s is None:
                self._interval_s = gap
            else:
                self._interval_s += self._SMOOTHING * (gap - self._interval_s)
        self._last_at = now

    @property
    def next_frame_due_at(self) -> float | None:
        if self._last_at is None or self._interval_s is None:
            return None
        return self._last_at + self._interval_s


class BatchRunner:
    """One model's batch loop and engine threads: up to `policy.max_batches_in_flight`
    batches run side by side, each on its own engine thread.

    All times, the batcher's included, come from `clock`; the event loop's own clock only
    measures the relative sleep until the next batch is due.
    """

    def __init__(
        self,
        engine: Engine,
        policy: BatchPolicy,
        metrics: ModelMetrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self.engine = engine
        name = engine.spec.name
        # Engines whose infer() is thread-safe run that many batches side by side.
        self._engine_executor = ThreadPoolExecutor(
            max_workers=policy.max_batches_in_flight,
            thread_name_prefix=f"engine-{name}",
            initializer=name_this_thread,
            initargs=(f"engine-{name}",),
        )
        self._batcher: Batcher[FrameForBatch] = Batcher(policy, clock)
        self._max_batches_in_flight = policy.max_batches_in_flight
        self._batches_in_flight = 0
        self._metrics = metrics
        self._clock = clock
        self._wakeup = asyncio.Event()
        self.frames_decoding = 0  # frames of this model being decoded: they join soon
        self._cadences: set[StreamCadence] = set()
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._loop_failure: BaseException | None = None

    @property
    def frames_waiting(self) -> int:
        """Frames decoded and waiting for their batch to close."""
        return len(self._batcher)

    @property
    def batches_in_flight(self) -> int:
        return self._batches_in_flight

    async def start(self) -> None:
        """Warms the engine up on its own thread, then starts taking batches."""
        await asyncio.get_running_loop().run_in_executor(self._engine_executor, self.engine.warm_up)
        self._loop_task = asyncio.create_task(
            self._run_batches(), name=f"batches-{self.engine.spec.name}"
        )
        self._loop_task.add_done_callback(self._on_loop_end)

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        self._engine_executor.shutdown(wait=True)

    def open_stream(self) -> StreamCadence:
        """Registers a stream of this model, whose frames the batcher may wait for."""
        cadence = StreamCadence()
        self._cadences.add(cadence)
        return cadence

    def close_stream(self, cadence: StreamCadence) -> None:
        self._cadences.discard(cadence)
        self._wakeup.set()  # a batch waiting for this stream's frame closes now

    def frame_decoded(self) -> None:
        """One of `frames_decoding` is done (or failed): the batcher may have waited for it."""
        self.frames_decoding -= 1
        self._wakeup.set()

    def add(self, pixels: np.ndarray) -> FrameForBatch:
        """Queues a decoded frame for a batch; await its `output`, and `remove()` it if the
        caller goes away first."""
        if self._loop_failure is not None:
            raise internal_error(self._loop_failure, "the batch loop stopped")
        frame = FrameForBatch(pixels, asyncio.get_running_loop().create_future())
        self._batcher.add(frame)
        self._wakeup.set()
        return frame

    def remove(self, frame: FrameForBatch) -> None:
        self._batcher.remove(frame)

    def _outlook(self) -> Outlook:
        due = [cadence.next_frame_due_at for cadence in self._cadences]
        known = tuple(at for at in due if at is not None)
        return Outlook(
            self.frames_decoding,
            known,
            streams_starting=len(due) - len(known),
            idle_engines=self._max_batches_in_flight - self._batches_in_flight,
        )

    def start_due_batches(self) -> float | None:
        """Starts every batch that is due while the engine has room; returns how long the loop
        may sleep before the next is due (None: until something changes)."""
        while self._batches_in_flight < self._max_batches_in_flight:
            outlook = self._outlook()  # reads every open stream: once per look at the queue
            batch = self._batcher.take_batch(outlook)
            if batch is None:
                return self._batcher.seconds_until_due(outlook)
            self._batches_in_flight += 1
            task = asyncio.create_task(self._run_batch(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)
        return None  # with the engine full, only a finished batch (which wakes us) frees it

    async def _run_batches(self) -> None:
        while True:
            timeout = self.start_due_batches()
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _on_loop_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._loop_failure = task.exception()
        log.error("the batch loop of %s died", self.engine.spec.name, exc_info=self._loop_failure)
        failure = internal_error(self._loop_failure, "the batch loop stopped")
        for frame in self._batcher.take_all():
            if not frame.output.done():
                frame.output.set_exception(failure)

    async def _run_batch(self, batch: Batch[FrameForBatch]) -> None:
        # Frames whose caller went away while the batch formed are not run.
        live = [
            (frame, waited_s)
            for frame, waited_s in zip(batch.items, batch.waited_s, strict=True)
            if not frame.output.done()
        ]
        frames = [frame for frame, _ in live]
        try:
            if not frames:
                return
            alphas, inference_s = await asyncio.get_running_loop().run_in_executor(
                self._engine_executor, self._infer, [frame.pixels for frame in frames]
            )
            self._metrics.observe_batch(len(frames), self.engine.padded_size(len(frames)))
            for (frame, batch_wait_s), alpha in zip(live, alphas, strict=True):
                if not frame.output.done():
                    frame.output.set_result(
                        BatchOutput(alpha, len(frames), batch_wait_s, inference_s)
                    )
        except Exception as error:
            log.exception("inference of a batch of %d frames failed", len(frames))
            failure = internal_error(error, "inference failed")
            for frame in frames:
                if not frame.output.done():
                    frame.output.set_exception(failure)
        finally:
            self._batches_in_flight -= 1
            self._wakeup.set()

    def _infer(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, float]:
        started = self._clock()
        alphas = self.engine.infer(np.stack(pixels))
        if len(alphas) != len(pixels):
            raise RuntimeError(f"engine returned {len(alphas)} masks for {len(pixels)} frames")
        return alphas, self._clock() - started
