"""The frame path on the GPU: a batch goes to the GPU as JPEG bytes and comes back as answers.

Before the batch, on the event loop: the header is read and the limits checked on the CPU, as
on the CPU path, so nothing over a limit is queued, and the frame's structure is checked
(`jpeg_checks`: nvJPEG may decode a truncated frame as a partial image). In the batch, on an
engine thread, on that thread's own stream: the JPEGs are decoded together on the GPU (a failed
list decode raises for all of them, so then each is decoded alone and only the corrupt ones
fail, each with its own `corrupt_jpeg`: `gpu_decode`), stretched to the model's input, run
through the model, smoothed per stream at the model's size in batch order, upscaled, and
composited and JPEG-encoded on the GPU. Masks come back as bytes at their output size, and are
encoded on the codec threads (grayscale JPEG, PNG and RAW stay on the CPU). Edge-aware
upscaling stays on the CPU too: those frames bring the model's input and the frame back with
their alpha.

A failure of the device itself (its memory exhausted, or a sticky CUDA error that a device
synchronise then raises) fails the whole batch as an `EngineFailure`, never as corrupt frames.
Each batch times its own stages on the device (decode; stretch and model; smoothing, upscale,
composite and encode), so that the answers' timings and the stage metric bill each stage. Every
device call goes through one `FrameDevice` (`gpu_device.py`): the rest is torch tensor ops, the
same on the CPU, where the tests run it with `CpuFrameDevice`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.engines.base import blank_frames
from service.errors import EngineFailure, FrameError
from service.frames.codec import JpegCodec
from service.frames.gpu_decode import DeviceDecoder
from service.frames.gpu_device import FrameDevice, tiny_jpeg
from service.frames.gpu_ops import blended, blurred, resized, to_uint8
from service.frames.jpeg_checks import check_complete
from service.frames.path import Finished, FrameJob, StageTimes
from service.frames.refine import Background, guided_upscale
from service.frames.requests import EncodedImage
from service.frames.workers import WorkerThreads

if TYPE_CHECKING:
    import torch

    from service.engines.base import DeviceEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuPrepared:
    """A frame between its header check and its batch: still JPEG bytes, with its job."""

    job: FrameJob
    width: int
    height: int


@dataclass(frozen=True)
class BatchStages:
    """Device seconds of one batch's stages, shared by its frames."""

    decode_s: float  # the JPEG decode
    model_s: float  # the stretch to the model's input and the model
    encode_s: float  # after the model: smoothing, upscale, composite, JPEG encode, host copies


@dataclass(frozen=True)
class GpuResult:
    """What a batch leaves for one frame to finish on the CPU."""

    mask: np.ndarray | None = None  # uint8 (H, W) at the output size
    composited: bytes | None = None  # the composite's JPEG
    # Edge-aware: the alpha and the model's input at the model's size, the frame at output size.
    edge: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    stages: BatchStages | None = None


@dataclass(frozen=True, eq=False)
class _Composite:
    """A composited frame on the device, waiting for the batch's JPEG encode."""

    image: Any  # uint8 (3, H, W)
    quality: int


class GpuFramePath:
    """Prepared: `GpuPrepared`; batched: `GpuResult`. The engine runs on `device.device`."""

    def __init__(
        self,
        engine: DeviceEngine,
        codec: JpegCodec,
        codec_workers: WorkerThreads,
        device: FrameDevice,
    ) -> None:
        import torch

        self.engine = engine
        self._spec = engine.spec
        self._codec = codec
        self._codec_workers = codec_workers
        self._device = device
        self._torch = torch
        self.max_batch_size = engine.max_batch_size
        self.batches_at_once = engine.batches_at_once
        self._decoder = DeviceDecoder(device)

    def warm_up(self) -> None:
        self.engine.warm_up()
        self._codec_round_trip()  # nvJPEG's first decode and encode set up its handles

    def probe(self) -> None:
        """A failing engine's probe: nvJPEG and the model once each, the smallest batch."""
        self._codec_round_trip()
        self.engine.infer(blank_frames(self._spec, 1))

    def _codec_round_trip(self) -> None:
        with self._device.stream():
            self._device.encode_jpeg(self._device.decode([tiny_jpeg()]), 90)

    def padded_size(self, frames: int) -> int:
        return self.engine.padded_size(frames)

    async def prepare(self, job: FrameJob) -> GpuPrepared:
        width, height = self._codec.read_size(job.jpeg)  # the limits, before anything queues
        check_complete(job.jpeg)  # what nvJPEG may decode as a partial image
        return GpuPrepared(job, width, height)

    def stage_times(
        self, prepare_s: float, batched: GpuResult, batch_s: float, finish_s: float
    ) -> StageTimes:
        """Decode, inference and encode seconds: the batch's own split of its run."""
        stages = batched.stages or BatchStages(0.0, 0.0, 0.0)
        inference_s = max(0.0, batch_s - stages.decode_s - stages.encode_s)
        return StageTimes(prepare_s + stages.decode_s, inference_s, stages.encode_s + finish_s)

    # --- the batch, on an engine thread ----------------------------------------------------

    def run_batch(self, prepared: Sequence[GpuPrepared]) -> list[GpuResult | FrameError]:
        """Each frame's result in order; a frame that fails to decode fails alone; a failure
        of the device fails the batch as an EngineFailure."""
        torch = self._torch
        try:
            with self._device.stream(), torch.inference_mode():
                return self._run_batch(prepared)
        except EngineFailure:
            raise
        except Exception as error:
            self._decoder.raise_if_broken(error)
            raise

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor | FrameError]:
        """uint8 (3, H, W) on the device for each JPEG, or its FrameError (`gpu_decode`)."""
        return self._decoder.decode(jpegs)

    def _run_batch(self, prepared: Sequence[GpuPrepared]) -> list[GpuResult | FrameError]:
        torch, device = self._torch, self._device
        started = device.mark()
        images = self._decoder.decode([frame.job.jpeg for frame in prepared])
        decoded = device.mark()
        good = [n for n, image in enumerate(images) if not isinstance(image, FrameError)]
        results: list[Any] = list(images)
        if not good:
            return results
        height, width = self._spec.input_height, self._spec.input_width
        inputs = torch.stack([self._stretch(images[n], width, height) for n in good])
        alphas = self._run_model(inputs)
        inferred = device.mark()
        pending = [
            self._after_model(prepared[n].job, images[n], inputs[i], alphas[i])
            for i, n in enumerate(good)
        ]
        composites = self._encode_composites(pending)
        ended = device.mark()
        device.wait()
        stages = BatchStages(
            device.elapsed_s(started, decoded),
            device.elapsed_s(decoded, inferred),
            device.elapsed_s(inferred, ended),
        )
        for n, result in zip(good, pending, strict=True):
            finished = composites.get(id(result)) or result()
            results[n] = dataclasses.replace(finished, stages=stages)
        return results

    def _encode_composites(self, pending: list[Any]) -> dict[int, GpuResult]:
        """The batch's composites JPEG-encoded together, one device call per quality."""
        by_quality: dict[int, list[_Composite]] = {}
        for item in pending:
            if isinstance(item, _Composite):
                by_quality.setdefault(item.quality, []).append(item)
        encoded = {}
        for quality, items in by_quality.items():
            jpegs = self._device.encode_jpeg([item.image for item in items], quality)
            for item, jpeg in zip(items, jpegs, strict=True):
                encoded[id(item)] = GpuResult(composited=jpeg)
        return encoded

    def _run_model(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.engine.infer_on_device(inputs)

    def _stretch(self, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """uint8 (3, H, W) -> uint8 (height, width, 3): the model's input, stretched with an
        antialiased bilinear filter."""
        return to_uint8(resized(image.float(), width, height)).permute(1, 2, 0)

    def _after_model(
        self, job: FrameJob, image: torch.Tensor, model_input: torch.Tensor, alpha: torch.Tensor
    ) -> Any:
        """Starts this frame's work after the model; returns what completes it after `wait`."""
        if job.smoother is not None:
            # A copy: the stream keeps it as its previous alpha, not a view of the whole batch.
            blend = functools.partial(_blend_on_this_stream, job.smoother.blend)
            alpha = job.smoother.step(alpha.clone(), job.sequence, blend, self._device.wait)
        request = job.request
        width, height = request.width or image.shape[2], request.height or image.shape[1]
        if request.edge_aware:
            copies = [self._device.to_host(t) for t in (alpha, model_input, _hwc(image))]
            return lambda: GpuResult(edge=tuple(c.numpy() for c in copies))
        full_alpha = resized(alpha[None], width, height)[0]
        if request.composite is None:
            mask = self._device.to_host(to_uint8(full_alpha * 255.0))
            return lambda: GpuResult(mask=mask.numpy())
        frame = image
        if tuple(image.shape[1:]) != (height, width):
            frame = to_uint8(resized(image.float(), width, height))
        behind = self._background(request.composite.background, frame)
        return _Composite(blended(frame, behind, full_alpha), request.composite.jpeg_quality)

    def _background(self, background: Background, frame: torch.Tensor) -> torch.Tensor:
        """float (3, H, W) of what goes behind the person; a colour or an image is rendered
        once per size in the Background's own cache."""
        torch = self._torch
        if background.blurs:
            return blurred(frame, background)
        key = (str(frame.device), *frame.shape[1:])
        rendered = background.cached(key, lambda: self._render(background, frame))
        if rendered.is_cuda:  # maybe rendered on another thread's stream: keep it for this one
            rendered.record_stream(torch.cuda.current_stream(rendered.device))
        return rendered

    def _render(self, background: Background, frame: torch.Tensor) -> torch.Tensor:
        torch = self._torch
        height, width = frame.shape[1:]
        if background.image is not None:
            source = torch.from_numpy(np.ascontiguousarray(background.image)).to(frame.device)
            rendered = resized(source.permute(2, 0, 1).float(), width, height).round()
        else:
            color = torch.tensor(background.color, dtype=torch.float32, device=frame.device)
            rendered = color[:, None, None].expand(3, height, width)
        self._device.wait()  # written before another thread's stream reads it
        return rendered

    # --- after the batch, on the codec threads -------------------------------------------

    async def finish(self, job: FrameJob, prepared: GpuPrepared, batched: GpuResult) -> Finished:
        request = job.request
        width = request.width or prepared.width
        height = request.height or prepared.height
        if batched.composited is not None:
            return None, EncodedImage(width, height, batched.composited)
        if batched.edge is not None:
            return await self._codec_workers.run(self._finish_edge, job, batched.edge)
        mask = await self._codec_workers.run(
            self._codec.encode_mask, batched.mask, width, height, request.encoding
        )
        return mask, None

    def _finish_edge(self, job: FrameJob, edge: tuple[np.ndarray, ...]) -> Finished:
        alpha, pixels, frame = edge
        request = job.request
        height, width = frame.shape[:2]
        width, height = request.width or width, request.height or height
        alpha = guided_upscale(alpha, pixels, _output_frame(frame, width, height))
        return self._codec.encode_mask(alpha, width, height, request.encoding), None


def _blend_on_this_stream(blend: Any, previous: torch.Tensor, alpha: torch.Tensor) -> Any:
    """The smoother's blend in torch; the previous alpha, written on another engine thread's
    stream, is kept until this stream has read it."""
    import torch

    if previous.is_cuda:
        previous.record_stream(torch.cuda.current_stream(previous.device))
    return blend(previous, alpha, torch.log2)


def _hwc(image: torch.Tensor) -> torch.Tensor:
    return image.permute(1, 2, 0).contiguous()


def _output_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    from service.frames.resize import resize

    return resize(frame, width, height)
