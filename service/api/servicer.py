"""The gRPC servicer: each call's lifecycle, from its first message to its status. Conversion
to and from the wire is `protocol`'s, statuses are `status`'s, reading a stream is
`frame_reader`'s; the frames themselves go through `streams` and `frames`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.api import protocol
from service.api.frame_reader import read_first, read_frames
from service.api.status import ANSWERED_ERRORS, DRAINING_DETAILS, status_of
from service.errors import (
    EngineFailingError,
    FrameError,
    NotReadyError,
    ShuttingDownError,
    TooManyStreamsError,
    UnknownModelError,
    internal_error,
)
from service.frames.codec import JpegCodec
from service.frames.pipeline import ModelPipeline
from service.metrics import ModelMetrics, ServiceMetrics
from service.streams.admission import AdmissionScheduler
from service.streams.answers import FrameAnswer, FrameOutcome
from service.streams.registry import StreamRegistry
from service.streams.video_stream import VideoStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicerSettings:
    """The settings the calls' lifecycle reads, from the service's config."""

    default_model: str
    max_frame_pixels: int
    stream_idle_timeout_s: float
    max_frames_in_flight_per_stream: int
    max_unwritten_answers_per_stream: int


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(
        self,
        settings: ServicerSettings,
        streams: StreamRegistry,
        admission: AdmissionScheduler[VideoStream],
        metrics: ServiceMetrics,
        codec: JpegCodec,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._pipelines: Mapping[str, ModelPipeline] | None = None  # None while warming up
        self._streams = streams
        self._metrics = metrics
        self._admission = admission
        self._readers: dict[VideoStream, asyncio.Task[None]] = {}
        self._drained: set[VideoStream] = set()  # streams whose reading the drain stopped
        self._draining = False
        self._frames_read_by_ended_streams = 0
        self.frames_answered = 0
        self.frames_dropped = 0  # answered DROPPED, for the replica's measured load

    @property
    def frames_received(self) -> int:
        """Frames read off every stream so far, open or ended."""
        open_streams = sum(stream.frames_read for stream in self._readers)
        return self._frames_read_by_ended_streams + open_streams

    def drain(self) -> None:
        """Takes no new streams or frames; open streams end UNAVAILABLE (DRAINING_DETAILS)
        once the frames read from them are answered."""
        self._draining = True
        for stream, reader in list(self._readers.items()):
            if not reader.done():  # a caller that already ended its input ends OK
                self._drained.add(stream)
            reader.cancel()
            stream.end_input()

    def serve_models(self, pipelines: Mapping[str, ModelPipeline]) -> None:
        """Starts answering requests, once every model is warm."""
        self._pipelines = pipelines

    def _loaded_pipelines(self) -> Mapping[str, ModelPipeline]:
        if self._pipelines is None:
            raise NotReadyError("the server is still loading and warming up its models")
        return self._pipelines

    def _pipeline(self, model: str) -> ModelPipeline:
        pipelines = self._loaded_pipelines()
        name = model or self._settings.default_model
        try:
            pipeline = pipelines[name]
        except KeyError:
            raise UnknownModelError(
                f"model {name!r} is not loaded here; loaded models: {sorted(pipelines)}"
            ) from None
        health = pipeline.batch_runner.engine_health
        if health.failing:
            raise EngineFailingError(_failing_details(name, health.last_failure))
        return pipeline

    def end_streams_of(self, model: str) -> None:
        """The model's engine fails every batch: its open streams end UNAVAILABLE, so that
        their callers reopen them on a replica that works."""
        health = self._loaded_pipelines()[model].batch_runner.engine_health
        for stream in self._streams.streams_of(model):
            stream.fail(EngineFailingError(_failing_details(model, health.last_failure)))

    async def StreamSegment(
        self,
        request_iterator: AsyncIterator[pb.StreamSegmentRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Reads and writes through the call's own `read()` and `write()`, not through the
        request iterator and a generator of responses: each of those wraps every message in
        an async generator step of its own, for nothing. One response per frame, as always."""
        stream: VideoStream | None = None
        reader: asyncio.Task[None] | None = None
        requests = context.read
        idle_s = self._settings.stream_idle_timeout_s
        try:
            if self._draining:
                raise ShuttingDownError(
                    "the server is draining for shutdown; open the stream on another replica"
                )
            first = await read_first(requests, idle_s)
            if first is None:
                return  # the caller closed without sending anything
            stream = await self._open_stream(first)
            metrics = self._metrics.for_model(stream.model)
            metrics.active_streams.inc()
            if self._draining:  # shutdown began while the config was read: take no frames
                self._drained.add(stream)
                stream.end_input()
            else:
                reader = asyncio.create_task(read_frames(requests, stream, metrics, idle_s))
                self._readers[stream] = reader
            write, stream_id = context.write, stream.stream_id
            async for answer in stream.answers():
                response = protocol.stream_response(stream_id, answer)
                _observe(metrics, answer)
                self.frames_answered += 1
                if answer.outcome is FrameOutcome.DROPPED:
                    self.frames_dropped += 1
                await write(response)
            if stream in self._drained:
                raise ShuttingDownError(DRAINING_DETAILS)
        except ANSWERED_ERRORS as error:
            if stream is None and type(error) in _REFUSALS:
                self._refused(error)
            await context.abort(status_of(error), str(error))
        finally:
            # Runs on normal end, on abort, and when the caller vanished (cancellation).
            try:
                if reader is not None:
                    self._readers.pop(stream, None)
                    reader.cancel()
                    # The reader hands its own failures to the stream; none may skip the close.
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
            finally:
                if stream is not None:
                    self._frames_read_by_ended_streams += stream.frames_read
                    self._drained.discard(stream)
                    await self._streams.close(stream)
                    self._metrics.for_model(stream.model).active_streams.dec()

    def _refused(self, error: Exception) -> None:
        limit = error.limit if isinstance(error, TooManyStreamsError) else _REFUSALS[type(error)]
        self._metrics.streams_refused.labels(limit).inc()
        log.info("a new stream was refused (%s): %s", limit, error)

    async def _open_stream(self, first: pb.StreamSegmentRequest) -> VideoStream:
        config = protocol.stream_config(first)
        pipeline = self._pipeline(config.model)
        settings = await protocol.stream_settings(
            config, self._codec, self._settings.max_frame_pixels
        )
        stream_id = self._streams.claim_id(settings.stream_id)
        stream = VideoStream(
            stream_id,
            pipeline.open_stream(settings.output, settings.smoothing_strength),
            self._settings.max_frames_in_flight_per_stream,
            self._admission,
            max_unwritten=self._settings.max_unwritten_answers_per_stream,
        )
        self._streams.add(stream)
        return stream

    async def Segment(
        self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SegmentResponse:
        try:
            return await self._segment_one(request)
        except ANSWERED_ERRORS as error:
            await context.abort(status_of(error), str(error))

    async def _segment_one(self, request: pb.SegmentRequest) -> pb.SegmentResponse:
        if self._draining:
            raise ShuttingDownError("the server is shutting down")
        pipeline = self._pipeline(request.model)
        output = protocol.output_request(
            request.mask_width,
            request.mask_height,
            request.mask_encoding,
            self._settings.max_frame_pixels,
        )
        metrics = self._metrics.for_model(pipeline.spec.name)
        metrics.observe_received(len(request.jpeg))
        try:
            segmented = await pipeline.segment(request.jpeg, output)
        except Exception as error:
            if not isinstance(error, FrameError):  # a bug costs this call, with a clear status
                log.exception("Segment failed")
            frame_error = internal_error(error)
            metrics.observe_frame(FrameOutcome.ERROR, frame_error.reason)
            raise frame_error from None
        total_s = segmented.timings.total_s
        metrics.observe_frame(
            FrameOutcome.OK,
            stage_seconds=segmented.timings.by_stage(admission_wait_s=0.0),
            total_s=total_s,
            sent_bytes=segmented.sent_bytes,
        )
        return protocol.segment_response(segmented)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        try:
            pipelines = self._loaded_pipelines()
        except ANSWERED_ERRORS as error:
            await context.abort(status_of(error), str(error))
        return protocol.models_response(
            [pipeline.engine for pipeline in pipelines.values()], self._settings.default_model
        )


# The errors that refuse a new stream, by the limit that refused it (the label of
# segmentation_streams_refused_total); TooManyStreamsError names its own.
_REFUSALS: dict[type[Exception], str] = {
    TooManyStreamsError: "max_streams",
    EngineFailingError: "engine_failing",
    ShuttingDownError: "draining",
}


def _failing_details(model: str, last_failure: str) -> str:
    return (
        f"the engine of model {model} on this replica fails every batch (last: {last_failure}); "
        "reopen the stream on another replica"
    )


def _observe(metrics: ModelMetrics, answer: FrameAnswer) -> None:
    stages = None
    sent_bytes = 0
    if answer.segmented is not None:
        sent_bytes = answer.segmented.sent_bytes
        stages = answer.segmented.timings.by_stage(answer.admission_wait_s)
    metrics.observe_frame(
        answer.outcome,
        reason=answer.error.reason if answer.error else "",
        stage_seconds=stages,
        total_s=answer.total_s,
        sent_bytes=sent_bytes,
    )
