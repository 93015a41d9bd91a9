"""The path of one frame through one model: decode, batch, infer, encode.

Decoding and encoding run on the shared codec threads, inference on the model's own engine
threads; the event loop only moves frames between them. When batches close is not decided here
but by `batcher.Batcher`: this module runs a batch whenever the batcher hands one out and the
engine has room for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.batcher import Batch, Batcher, BatchPolicy, Clock, Outlook
from service.codec import DecodedFrame, EncodedMask, JpegCodec
from service.engine import Engine
from service.errors import FrameError, FrameErrorReason, InvalidConfigError
from service.metrics import ModelMetrics
from service.refine import Background, composite, guided_upscale
from service.resize import resize
from service.threads import name_this_thread
from service.workers import WorkerThreads

log = logging.getLogger(__name__)

# One frame's temporal smoothing with its stream's state: alpha at model size in and out.
Smoothing = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompositeRequest:
    background: Background
    jpeg_quality: int = 85


@dataclass(frozen=True)
class MaskRequest:
    """What the caller wants back. A size of 0 x 0 means the frame's own size."""

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


@dataclass(frozen=True)
class _BatchOutput:
    alpha: np.ndarray  # float32 (H, W) at the model's input size
    batch_size: int
    batch_wait_s: float
    inference_s: float


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


@dataclass(eq=False)
class _WaitingFrame:
    pixels: np.ndarray
    output: asyncio.Future[_BatchOutput]


class ModelPipeline:
    """Serves one model to every stream: many callers of `segment()`, and engine threads
    that run up to `max_batches_in_flight` batches at once."""

    def __init__(
        self,
        engine: Engine,
        codec: JpegCodec,
        codec_workers: WorkerThreads,
        policy: BatchPolicy,
        max_batches_in_flight: int,
        metrics: ModelMetrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self.engine = engine
        self.spec = engine.spec
        self._codec = codec
        self._codec_workers = codec_workers
        # One engine thread per batch in flight: engines whose infer() is thread-safe run
        # that many batches side by side.
        self._engine_executor = ThreadPoolExecutor(
            max_workers=max_batches_in_flight,
            thread_name_prefix=f"engine-{self.spec.name}",
            initializer=name_this_thread,
            initargs=(f"engine-{self.spec.name}",),
        )
        self._batcher: Batcher[_WaitingFrame] = Batcher(policy, clock)
        self._max_batches_in_flight = max_batches_in_flight
        self._batches_in_flight = 0
        self._metrics = metrics
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._frames_decoding = 0
        self._cadences: set[StreamCadence] = set()
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def frames_waiting(self) -> int:
        return len(self._batcher)

    @property
    def batches_in_flight(self) -> int:
        return self._batches_in_flight

    async def start(self) -> None:
        """Warms the engine up on its own thread, then starts taking batches."""
        await asyncio.get_running_loop().run_in_executor(self._engine_executor, self.engine.warm_up)
        self._loop_task = asyncio.create_task(self._run_batches(), name=f"batches-{self.spec.name}")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        self._engine_executor.shutdown(wait=True)

    def open_stream(self) -> StreamCadence:
        """Registers a stream of this model; pass its cadence to `segment()`."""
        cadence = StreamCadence()
        self._cadences.add(cadence)
        return cadence

    def close_stream(self, cadence: StreamCadence) -> None:
        self._cadences.discard(cadence)
        self._wakeup.set()  # a batch waiting for this stream's frame closes now

    def _outlook(self) -> Outlook:
        due = [cadence.next_frame_due_at for cadence in self._cadences]
        known = tuple(at for at in due if at is not None)
        return Outlook(
            self._frames_decoding,
            known,
            streams_starting=len(due) - len(known),
            idle_engines=self._max_batches_in_flight - self._batches_in_flight,
        )

    async def segment(
        self,
        jpeg: bytes,
        mask: MaskRequest,
        smooth: Smoothing | None = None,
        cadence: StreamCadence | None = None,
    ) -> SegmentedFrame:
        """Segments one frame; raises FrameError when this frame cannot be served."""
        loop = asyncio.get_running_loop()
        started = self._clock()
        if cadence is not None:
            cadence.frame_arrived(started)
        self._frames_decoding += 1
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
            self._frames_decoding -= 1
            self._wakeup.set()  # the batcher may have been waiting for this frame
        decoded_at = self._clock()
        waiting = _WaitingFrame(decoded.pixels, loop.create_future())
        self._batcher.add(waiting)
        try:
            output = await waiting.output
        except asyncio.CancelledError:
            self._batcher.remove(waiting)
            raise
        encode_started = self._clock()
        encoded, composited = await self._codec_workers.run(
            self._finish, output.alpha, decoded, mask, smooth
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
        request: MaskRequest,
        smooth: Smoothing | None,
    ) -> tuple[EncodedMask | None, EncodedImage | None]:
        """Smooths, upscales and encodes one frame's alpha (on a codec thread)."""
        if smooth is not None:
            alpha = smooth(alpha)
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

    async def _run_batches(self) -> None:
        while True:
            while self._batches_in_flight < self._max_batches_in_flight:
                batch = self._batcher.take_batch(self._outlook())
                if batch is None:
                    break
                self._batches_in_flight += 1
                task = asyncio.create_task(self._run_batch(batch))
                self._batch_tasks.add(task)
                task.add_done_callback(self._batch_tasks.discard)
            # With the engine full, only a finished batch (which sets the event) can free it.
            room = self._batches_in_flight < self._max_batches_in_flight
            timeout = self._batcher.seconds_until_due(self._outlook()) if room else None
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _run_batch(self, batch: Batch[_WaitingFrame]) -> None:
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
                        _BatchOutput(alpha, len(frames), batch_wait_s, inference_s)
                    )
        except Exception as error:
            log.exception("inference of a batch of %d frames failed", len(frames))
            failure = FrameError(FrameErrorReason.INTERNAL, f"inference failed: {error}")
            for frame in frames:
                if not frame.output.done():
                    frame.output.set_exception(failure)
        finally:
            self._batches_in_flight -= 1
            self._wakeup.set()

    def _infer(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        alphas = self.engine.infer(np.stack(pixels))
        if len(alphas) != len(pixels):
            raise RuntimeError(f"engine returned {len(alphas)} masks for {len(pixels)} frames")
        return alphas, time.perf_counter() - started
