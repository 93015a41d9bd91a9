"""The frame path on the CPU: decode and resize before the batch and smooth, upscale,
composite and encode after it, frame by frame on the codec threads; the model runs the batch
of decoded pixels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.engines.base import Engine, blank_frames
from service.frames.codec import DecodedFrame, JpegCodec
from service.frames.path import Finished, FrameJob, StageTimes
from service.frames.refine import composite, guided_upscale
from service.frames.requests import EncodedImage
from service.frames.resize import resize
from service.frames.workers import WorkerThreads


class CpuFramePath:
    """Prepared: a `DecodedFrame`; batched: the frame's float alpha at the model's size."""

    def __init__(self, engine: Engine, codec: JpegCodec, codec_workers: WorkerThreads) -> None:
        self.engine = engine
        self._spec = engine.spec
        self._codec = codec
        self._codec_workers = codec_workers
        self.max_batch_size = engine.max_batch_size
        self.batches_at_once = engine.batches_at_once

    def warm_up(self) -> None:
        self.engine.warm_up()

    def probe(self) -> None:
        self.engine.infer(blank_frames(self._spec, 1))  # the smallest batch, once

    def padded_size(self, frames: int) -> int:
        return self.engine.padded_size(frames)

    async def prepare(self, job: FrameJob) -> DecodedFrame:
        request = job.request
        return await self._codec_workers.run(
            self._codec.decode_for_model,
            job.jpeg,
            self._spec.input_width,
            self._spec.input_height,
            (request.width, request.height) if request.needs_frame else None,
            self._spec.fit,
        )

    def stage_times(
        self, prepare_s: float, batched: np.ndarray, batch_s: float, finish_s: float
    ) -> StageTimes:
        """Decode before the batch, the model in it, the rest (encode included) after it."""
        return StageTimes(prepare_s, batch_s, finish_s)

    def run_batch(self, prepared: Sequence[DecodedFrame]) -> Sequence[np.ndarray]:
        return list(self.engine.infer(np.stack([frame.pixels for frame in prepared])))

    async def finish(self, job: FrameJob, prepared: DecodedFrame, batched: np.ndarray) -> Finished:
        return await self._codec_workers.run(self._finish, job, prepared, batched)

    def _finish(self, job: FrameJob, decoded: DecodedFrame, alpha: np.ndarray) -> Finished:
        """Smooths, upscales and encodes one frame's alpha (on a codec thread)."""
        request = job.request
        if job.smoother is not None:
            alpha = job.smoother(alpha, job.sequence)
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
