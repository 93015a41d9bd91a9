"""One model's frames, from each stream's JPEG to its answer: prepare, batch, finish.

`ModelPipeline` joins a model's frame path (`path.FramePath`) to its batch runner, and each
stream of the model holds a `StreamHandle` from `open_stream()`: the handle tells the batcher
when the stream's next frame is due and keeps the stream's smoothing state, and it leaves with
`close()`. A frame's path reads one call per step: `StreamHandle.segment` ->
`FramePath.prepare` -> `BatchRunner.run` (which runs `FramePath.run_batch` on an engine
thread) -> `FramePath.finish`.
"""

from __future__ import annotations

import dataclasses
import time

from service.batching.batcher import BatchPolicy
from service.batching.cadence import StreamCadence
from service.batching.runner import BatchRunner
from service.clock import Clock
from service.engines.base import Engine
from service.frames.path import FrameJob, FramePath
from service.frames.refine import TemporalSmoother
from service.frames.requests import FrameTimings, OutputRequest, SegmentedFrame
from service.metrics import ModelMetrics


def policy_for(path: FramePath, policy: BatchPolicy) -> BatchPolicy:
    """The batching policy as this path can run it: no batch over its largest, and as many
    batches in flight as it has engine threads."""
    max_batch_size = policy.max_batch_size
    if path.max_batch_size is not None:
        max_batch_size = min(max_batch_size, path.max_batch_size)
    return dataclasses.replace(
        policy, max_batch_size=max_batch_size, max_batches_in_flight=path.batches_at_once
    )


class ModelPipeline:
    """Serves one model to every stream: many callers of `segment()`, one `BatchRunner`."""

    def __init__(
        self,
        engine: Engine,
        path: FramePath,
        policy: BatchPolicy,
        metrics: ModelMetrics,
        clock: Clock = time.monotonic,
        *,
        failing_after_s: float,  # see EngineHealth
    ) -> None:
        self.engine = engine
        self.spec = engine.spec
        self._path = path
        self.clock = clock
        self.batch_runner = BatchRunner(
            path,
            policy_for(path, policy),
            metrics,
            self.spec.name,
            clock,
            failing_after_s=failing_after_s,
        )

    async def start(self) -> None:
        await self.batch_runner.start()

    async def stop(self) -> None:
        await self.batch_runner.stop()

    def open_stream(self, request: OutputRequest, smoothing_strength: float = 0.0) -> StreamHandle:
        """A stream's place in this model's batches; `close()` it when the stream ends."""
        smoother = TemporalSmoother(smoothing_strength) if smoothing_strength else None
        return StreamHandle(self, request, smoother)

    async def segment(self, jpeg: bytes, request: OutputRequest) -> SegmentedFrame:
        """One frame outside any stream (the unary `Segment` call)."""
        return await self.run(FrameJob(jpeg, request))

    async def run(self, job: FrameJob) -> SegmentedFrame:
        """Segments one frame; raises FrameError when this frame cannot be served."""
        started = self.clock()
        with self.batch_runner.frame_on_its_way():
            prepared = await self._path.prepare(job)
        prepared_at = self.clock()
        output = await self.batch_runner.run(prepared)
        finish_started = self.clock()
        mask, composited = await self._path.finish(job, prepared, output.result)
        finished = self.clock()
        stages = self._path.stage_times(
            prepared_at - started, output.result, output.inference_s, finished - finish_started
        )
        timings = FrameTimings(
            decode_s=stages.decode_s,
            batch_wait_s=output.batch_wait_s,
            inference_s=stages.inference_s,
            encode_s=stages.encode_s,
            total_s=finished - started,
        )
        return SegmentedFrame(mask, output.batch_size, timings, composited)


class StreamHandle:
    """One stream's place in a model's batches: its cadence, its output and its smoothing."""

    def __init__(
        self, pipeline: ModelPipeline, request: OutputRequest, smoother: TemporalSmoother | None
    ) -> None:
        self.model = pipeline.spec.name
        self.request = request
        self._pipeline = pipeline
        self._batch_runner = pipeline.batch_runner
        self._clock = pipeline.clock
        # When the stream's next frame is due, for the batcher to know what is coming.
        self._cadence: StreamCadence = self._batch_runner.open_stream()
        self._smoother = smoother

    async def segment(self, jpeg: bytes, sequence: int) -> SegmentedFrame:
        """Segments the stream's frame number `sequence` (its arrival order)."""
        self._cadence.frame_started(self._clock())
        return await self._pipeline.run(FrameJob(jpeg, self.request, self._smoother, sequence))

    def close(self) -> None:
        self._batch_runner.close_stream(self._cadence)
