"""The path of one frame through one model: decode, wait for its batch, refine and encode.

Decoding and encoding run on the shared codec threads; the event loop only moves frames between
them and the model's `BatchRunner`, which runs the batches on the engine threads. This module
does the per-frame work and nothing else: when batches close is `batcher.Batcher`'s decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.batching.batcher import BatchPolicy, Clock
from service.batching.runner import BatchRunner, StreamCadence
from service.engines.base import Engine
from service.errors import InvalidConfigError
from service.frames.codec import DecodedFrame, EncodedMask, JpegCodec
from service.frames.refine import Background, composite, guided_upscale
from service.frames.resize import resize
from service.frames.workers import WorkerThreads
from service.metrics import ModelMetrics

log = logging.getLogger(__name__)

# One frame's temporal smoothing with its stream's state: alpha at model size in and out.
SmoothFrame = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompositeRequest:
    background: Background
    jpeg_quality: int = 85


@dataclass(frozen=True)
class OutputRequest:
    """What the caller wants back: a mask, or the composited frame. A size of 0 x 0 means the
    frame's own size."""

    width: int
    height: int
    encoding: int  # pb.MaskEncoding
    edge_aware: bool = False  # guided upscaling, which needs the full-resolution frame
    composite: CompositeRequest | None = None  # the composited frame instead of a mask

    @property
    def needs_frame(self) -> bool:
        return self.edge_aware or self.composite is not None

    def check(self, max_pixels: int) -> None:
        if (self.width == 0) != (self.height == 0):
            raise InvalidConfigError(
                f"mask size must give both width and height, or neither; "
                f"was {self.width}x{self.height}"
            )
        if self.width * self.height > max_pixels:
            raise InvalidConfigError(
                f"mask {self.width}x{self.height} has more than {max_pixels} pixels"
            )


@dataclass
class FrameTimings:
    decode_s: float = 0.0
    batch_wait_s: float = 0.0
    inference_s: float = 0.0
    encode_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class EncodedImage:
    width: int
    height: int
    jpeg: bytes


@dataclass(frozen=True)
class SegmentedFrame:
    mask: EncodedMask | None  # None when a composite was asked for
    batch_size: int
    timings: FrameTimings
    composited: EncodedImage | None = None

    @property
    def sent_bytes(self) -> int:
        return len(self.mask.data) if self.mask else len(self.composited.jpeg)


class ModelPipeline:
    """Serves one model to every stream: many callers of `segment()`, one `BatchRunner`."""

    def __init__(
        self,
        engine: Engine,
        codec: JpegCodec,
        codec_workers: WorkerThreads,
        policy: BatchPolicy,
        metrics: ModelMetrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self.engine = engine
        self.spec = engine.spec
        self._codec = codec
        self._codec_workers = codec_workers
        self._clock = clock
        self.batches = BatchRunner(engine, policy, metrics, clock)

    async def start(self) -> None:
        await self.batches.start()

    async def stop(self) -> None:
        await self.batches.stop()

    async def segment(
        self,
        jpeg: bytes,
        mask: OutputRequest,
        smooth_frame: SmoothFrame | None = None,
        cadence: StreamCadence | None = None,
    ) -> SegmentedFrame:
        """Segments one frame; raises FrameError when this frame cannot be served."""
        batches = self.batches
        started = self._clock()
        if cadence is not None:
            cadence.frame_arrived(started)
        batches.frames_decoding += 1
        try:
            decoded = await self._codec_workers.run(
                self._codec.decode_for_model,
                jpeg,
                self.spec.input_width,
                self.spec.input_height,
                (mask.width, mask.height) if mask.needs_frame else None,
                self.spec.fit,
            )
        finally:
            batches.frame_decoded()
        decoded_at = self._clock()
        queued = batches.add(decoded.pixels)
        try:
            output = await queued.output
        except asyncio.CancelledError:
            batches.remove(queued)
            raise
        encode_started = self._clock()
        encoded, composited = await self._codec_workers.run(
            self._finish, output.alpha, decoded, mask, smooth_frame
        )
        finished = self._clock()
        timings = FrameTimings(
            decode_s=decoded_at - started,
            batch_wait_s=output.batch_wait_s,
            inference_s=output.inference_s,
            encode_s=finished - encode_started,
            total_s=finished - started,
        )
        return SegmentedFrame(encoded, output.batch_size, timings, composited)

    def _finish(
        self,
        alpha: np.ndarray,
        decoded: DecodedFrame,
        request: OutputRequest,
        smooth_frame: SmoothFrame | None,
    ) -> tuple[EncodedMask | None, EncodedImage | None]:
        """Smooths, upscales and encodes one frame's alpha (on a codec thread)."""
        if smooth_frame is not None:
            alpha = smooth_frame(alpha)
        pixels = decoded.pixels
        if decoded.content_size is not None:
            # Letterboxed: the padding is no part of the frame, so it is cut before upscaling.
            content_width, content_height = decoded.content_size
            alpha = alpha[:content_height, :content_width]
            pixels = pixels[:content_height, :content_width]
        width, height = request.width or decoded.width, request.height or decoded.height
        if request.edge_aware:
            alpha = guided_upscale(alpha, pixels, decoded.frame)
        if request.composite is None:
            return self._codec.encode_mask(alpha, width, height, request.encoding), None
        alpha = resize(alpha, width, height)
        image = composite(decoded.frame, alpha, request.composite.background)
        jpeg = self._codec.encode_rgb(image, request.composite.jpeg_quality)
        return None, EncodedImage(width, height, jpeg)
