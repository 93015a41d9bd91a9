"""The gRPC servicer: protobuf in and out, and the one place that maps errors to status codes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Mapping

import grpc
from google.protobuf.message import DecodeError

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.api.idle import IdleWatch
from service.config import ServiceConfig
from service.errors import (
    FrameError,
    FrameErrorReason,
    InvalidConfigError,
    NotReadyError,
    ShuttingDownError,
    StreamIdleError,
    StreamProtocolError,
    StreamReplacedError,
    TooManyStreamsError,
    UnknownModelError,
    internal_error,
)
from service.frames.codec import EncodedMask, JpegCodec
from service.frames.pipeline import CompositeRequest, FrameTimings, ModelPipeline, OutputRequest
from service.frames.refine import Background
from service.metrics import ModelMetrics, ServiceMetrics
from service.streams.admission import FrameBudget
from service.streams.answers import FrameAnswer, FrameOutcome, IncomingFrame
from service.streams.registry import StreamRegistry
from service.streams.video_stream import VideoStream

log = logging.getLogger(__name__)

_STATUS_OF_ERROR: dict[type[Exception], grpc.StatusCode] = {
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    TooManyStreamsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StreamIdleError: grpc.StatusCode.DEADLINE_EXCEEDED,
    StreamProtocolError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModelError: grpc.StatusCode.NOT_FOUND,
    StreamReplacedError: grpc.StatusCode.ABORTED,
}
# The errors a call ends with a status for; anything else is a bug, made INTERNAL first.
_ANSWERED_ERRORS = (FrameError, *_STATUS_OF_ERROR)


def _status_of(error: Exception) -> grpc.StatusCode:
    """The one mapping from our errors to the status a call ends with."""
    if isinstance(error, FrameError):
        if error.reason == FrameErrorReason.INTERNAL:
            return grpc.StatusCode.INTERNAL
        return grpc.StatusCode.INVALID_ARGUMENT
    return _STATUS_OF_ERROR[type(error)]


# How a stream open at SIGTERM ends, once every frame read from it is answered: the caller
# learns at once, and the frames it sent after its last answer are exactly the unread ones.
DRAINING_DETAILS = (
    "the server is draining for shutdown; reopen the stream on another replica: "
    "frames after the last answer were not read"
)

DEFAULT_BLUR_RADIUS = 12.0  # pixels: a composite that names no background blurs it this much

_OUTCOME_STATUS = {
    FrameOutcome.OK: pb.StreamSegmentResponse.OK,
    FrameOutcome.DROPPED: pb.StreamSegmentResponse.DROPPED,
    FrameOutcome.ERROR: pb.StreamSegmentResponse.ERROR,
}


def _fill_mask(message: pb.Mask, mask: EncodedMask) -> None:
    """Fills the response's own Mask in place: building one and copying it would copy the bytes
    twice per frame."""
    message.width, message.height, message.encoding = mask.width, mask.height, mask.encoding
    message.data = mask.data


def _fill_timings(
    message: pb.StageTimings, timings: FrameTimings, admission_wait_s: float, total_s: float
) -> None:
    """Fills the response's own StageTimings in place (no message built to be copied)."""
    message.admission_wait_ms = admission_wait_s * 1e3
    message.decode_ms = timings.decode_s * 1e3
    message.batch_wait_ms = timings.batch_wait_s * 1e3
    message.inference_ms = timings.inference_s * 1e3
    message.encode_ms = timings.encode_s * 1e3
    message.total_ms = total_s * 1e3


def _stage_seconds(timings: FrameTimings, admission_wait_s: float) -> dict[str, float]:
    return {
        "admission_wait": admission_wait_s,
        "decode": timings.decode_s,
        "batch_wait": timings.batch_wait_s,
        "inference": timings.inference_s,
        "encode": timings.encode_s,
    }


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(
        self,
        config: ServiceConfig,
        streams: StreamRegistry,
        frame_budget: FrameBudget[VideoStream],
        metrics: ServiceMetrics,
        codec: JpegCodec,
    ) -> None:
        self._config = config
        self._codec = codec
        self._pipelines: Mapping[str, ModelPipeline] | None = None  # None while warming up
        self._streams = streams
        self._metrics = metrics
        self._frame_budget = frame_budget
        self._readers: dict[VideoStream, asyncio.Task[None]] = {}
        self._drained: set[VideoStream] = set()  # streams whose reading the drain stopped
        self._draining = False
        self.frames_received = 0
        self.frames_answered = 0

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
        name = model or self._config.default_model
        try:
            return pipelines[name]
        except KeyError:
            raise UnknownModelError(
                f"model {name!r} is not loaded here; loaded models: {sorted(pipelines)}"
            ) from None

    def _mask_request(self, width: int, height: int, encoding: int) -> OutputRequest:
        if encoding not in pb.MaskEncoding.values():
            raise InvalidConfigError(f"unknown mask encoding {encoding}")
        mask = OutputRequest(width, height, encoding or pb.MASK_ENCODING_RAW_U8)
        mask.check(self._config.max_frame_pixels)
        return mask

    async def StreamSegment(
        self,
        request_iterator: AsyncIterator[pb.StreamSegmentRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamSegmentResponse]:
        stream: VideoStream | None = None
        reader: asyncio.Task[None] | None = None
        requests = aiter(request_iterator)
        try:
            if self._draining:
                raise ShuttingDownError(
                    "the server is draining for shutdown; open the stream on another replica"
                )
            first = await self._next_request(requests)
            if first is None:
                return  # the caller closed without sending anything
            stream = await self._open_stream(first)
            metrics = self._metrics.for_model(stream.model)
            metrics.active_streams.inc()
            if self._draining:  # shutdown began while the config was read: take no frames
                self._drained.add(stream)
                stream.end_input()
            else:
                reader = asyncio.create_task(self._read_frames(requests, stream, metrics))
                self._readers[stream] = reader
            async for answer in stream.answers():
                response = self._response(stream.stream_id, answer)
                self._observe(metrics, answer)
                self.frames_answered += 1
                yield response
            if stream in self._drained:
                raise ShuttingDownError(DRAINING_DETAILS)
        except _ANSWERED_ERRORS as error:
            await context.abort(_status_of(error), str(error))
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
                    self._drained.discard(stream)
                    await self._streams.close(stream)
                    self._metrics.for_model(stream.model).active_streams.dec()

    async def _next_request(
        self, requests: AsyncIterator[pb.StreamSegmentRequest]
    ) -> pb.StreamSegmentRequest | None:
        """The first message, None at the end; a caller silent for too long is cut off."""
        idle_s = self._config.stream_idle_timeout_s
        try:
            async with asyncio.timeout(idle_s):
                return await self._read(requests)
        except TimeoutError:
            raise StreamIdleError(f"the stream sent nothing for {idle_s:g} s") from None

    @staticmethod
    async def _read(
        requests: AsyncIterator[pb.StreamSegmentRequest],
    ) -> pb.StreamSegmentRequest | None:
        """The next message, None at the end."""
        try:
            return await anext(requests)
        except StopAsyncIteration:
            return None
        except DecodeError as error:
            raise StreamProtocolError(
                f"a request could not be parsed as a StreamSegmentRequest: {error}"
            ) from None

    async def _open_stream(self, first: pb.StreamSegmentRequest) -> VideoStream:
        if not first.HasField("config"):
            raise StreamProtocolError(
                "the first message of a stream must be a StreamConfig; got a Frame"
            )
        config = first.config
        pipeline = self._pipeline(config.model)
        mask = self._mask_request(config.mask_width, config.mask_height, config.mask_encoding)
        if not 0.0 <= config.temporal_smoothing <= 1.0:
            raise InvalidConfigError(
                f"temporal_smoothing must be in [0, 1]; was {config.temporal_smoothing:g}"
            )
        composite = None
        if config.HasField("composite"):
            composite = await self._composite_request(config.composite)
        mask = dataclasses.replace(mask, edge_aware=config.edge_aware_upscale, composite=composite)
        return self._streams.open(
            config.stream_id,
            lambda stream_id: self._new_stream(
                stream_id, pipeline, mask, config.temporal_smoothing
            ),
        )

    def _new_stream(
        self,
        stream_id: str,
        pipeline: ModelPipeline,
        mask: OutputRequest,
        smoothing_strength: float,
    ) -> VideoStream:
        # The pipeline learns the stream's frame rate, for the batcher to know what is coming.
        cadence = pipeline.batches.open_stream()
        return VideoStream(
            stream_id,
            pipeline.spec.name,
            mask,
            functools.partial(pipeline.segment, cadence=cadence),
            self._config.max_frames_in_flight_per_stream,
            self._frame_budget,
            smoothing_strength=smoothing_strength,
            max_unwritten=self._config.max_unwritten_answers_per_stream,
            on_close=functools.partial(pipeline.batches.close_stream, cadence),
        )

    async def _composite_request(self, composite: pb.Composite) -> CompositeRequest:
        quality = composite.jpeg_quality or 85
        if not 1 <= quality <= 100:
            raise InvalidConfigError(f"composite jpeg_quality must be 1..100; was {quality}")
        match composite.WhichOneof("background"):
            case "color_rgb":
                rgb = composite.color_rgb
                background = Background(color=((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255))
            case "image_jpeg":
                try:
                    image = await asyncio.to_thread(self._codec.decode_image, composite.image_jpeg)
                except FrameError as error:
                    raise InvalidConfigError(
                        f"composite background image: {error.message}"
                    ) from None
                background = Background(image=image)
            case "blur_radius" if not 0 < composite.blur_radius <= 200:
                raise InvalidConfigError(
                    f"composite blur_radius must be in (0, 200]; was {composite.blur_radius:g}"
                )
            case "blur_radius":
                background = Background(blur_radius=composite.blur_radius)
            case _:
                background = Background(blur_radius=DEFAULT_BLUR_RADIUS)
        return CompositeRequest(background, quality)

    async def _read_frames(
        self,
        request_iterator: AsyncIterator[pb.StreamSegmentRequest],
        stream: VideoStream,
        metrics: ModelMetrics,
    ) -> None:
        """Reads the stream's frames into it. At its bound of unwritten answers the caller is
        not reading, so nothing more of it is read until it does; a caller that sends nothing,
        or reads nothing, for `stream_idle_timeout_s` is cut off."""
        idle = IdleWatch(self._config.stream_idle_timeout_s)
        waiting_for_the_caller_to_read = False
        try:
            while True:
                if not stream.has_room:
                    waiting_for_the_caller_to_read = True
                    await stream.wait_for_room()
                    waiting_for_the_caller_to_read = False
                    idle.progress()
                request = await self._read(request_iterator)
                idle.progress()
                if request is None:
                    break
                if not request.HasField("frame"):
                    raise StreamProtocolError(
                        "a stream carries one StreamConfig, first; got a second one"
                    )
                frame = request.frame
                metrics.received_bytes.inc(len(frame.jpeg))
                self.frames_received += 1
                stream.submit(IncomingFrame(frame.frame_id, frame.capture_timestamp_us, frame.jpeg))
            stream.end_input()
        except asyncio.CancelledError:
            if not idle.expired:
                raise
            asyncio.current_task().uncancel()
            idle_s = idle.timeout_s
            stream.fail(
                StreamIdleError(
                    f"the caller read no answers for {idle_s:g} s ({stream.unwritten} waiting)"
                    if waiting_for_the_caller_to_read
                    else f"the stream sent nothing for {idle_s:g} s"
                )
            )
        except Exception as error:  # protocol, or the transport failing under the read
            stream.fail(error)
        finally:
            idle.close()

    @staticmethod
    def _observe(metrics: ModelMetrics, answer: FrameAnswer) -> None:
        stages = None
        sent_bytes = 0
        if answer.segmented is not None:
            sent_bytes = answer.segmented.sent_bytes
            stages = _stage_seconds(answer.segmented.timings, answer.admission_wait_s)
        metrics.observe_frame(
            answer.outcome,
            reason=answer.error.reason if answer.error else "",
            stage_seconds=stages,
            total_s=answer.total_s,
            sent_bytes=sent_bytes,
        )

    @staticmethod
    def _response(stream_id: str, answer: FrameAnswer) -> pb.StreamSegmentResponse:
        response = pb.StreamSegmentResponse(
            stream_id=stream_id,
            frame_id=answer.frame_id,
            capture_timestamp_us=answer.capture_timestamp_us,
            status=_OUTCOME_STATUS[answer.outcome],
        )
        if answer.segmented is not None:
            if answer.segmented.mask is not None:
                _fill_mask(response.mask, answer.segmented.mask)
            else:
                image = answer.segmented.composited
                response.composited.width, response.composited.height = image.width, image.height
                response.composited.jpeg = image.jpeg
            response.batch_size = answer.segmented.batch_size
            _fill_timings(
                response.timings,
                answer.segmented.timings,
                answer.admission_wait_s,
                answer.total_s or 0.0,
            )
        if answer.error is not None:
            response.error_reason = answer.error.reason
            response.error_message = answer.error.message
        return response

    async def Segment(
        self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SegmentResponse:
        try:
            return await self._segment_one(request)
        except _ANSWERED_ERRORS as error:
            await context.abort(_status_of(error), str(error))

    async def _segment_one(self, request: pb.SegmentRequest) -> pb.SegmentResponse:
        if self._draining:
            raise ShuttingDownError("the server is shutting down")
        pipeline = self._pipeline(request.model)
        mask = self._mask_request(request.mask_width, request.mask_height, request.mask_encoding)
        metrics = self._metrics.for_model(pipeline.spec.name)
        try:
            segmented = await pipeline.segment(request.jpeg, mask)
        except Exception as error:
            if not isinstance(error, FrameError):  # a bug costs this call, with a clear status
                log.exception("Segment failed")
            frame_error = internal_error(error)
            metrics.observe_frame(
                FrameOutcome.ERROR, frame_error.reason, received_bytes=len(request.jpeg)
            )
            raise frame_error from None
        total_s = segmented.timings.total_s
        metrics.observe_frame(
            FrameOutcome.OK,
            stage_seconds=_stage_seconds(segmented.timings, 0.0),
            total_s=total_s,
            received_bytes=len(request.jpeg),
            sent_bytes=segmented.sent_bytes,
        )
        response = pb.SegmentResponse(batch_size=segmented.batch_size)
        _fill_timings(response.timings, segmented.timings, 0.0, total_s)
        _fill_mask(response.mask, segmented.mask)
        return response

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        try:
            pipelines = self._loaded_pipelines()
        except _ANSWERED_ERRORS as error:
            await context.abort(_status_of(error), str(error))
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name=name,
                    input_width=pipeline.spec.input_width,
                    input_height=pipeline.spec.input_height,
                    engine=pipeline.engine.name,
                    device=pipeline.engine.device,
                    is_default=name == self._config.default_model,
                    batched=max(pipeline.engine.batch_sizes) > 1,
                    batch_sizes=pipeline.engine.batch_sizes,
                )
                for name, pipeline in pipelines.items()
            ]
        )
