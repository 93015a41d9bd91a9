"""The seam between a model's batches and the work each frame needs around them.

A `FramePath` prepares a frame before its batch (on the CPU path: decode and resize it on the
codec threads), runs a batch of prepared frames on an engine thread, and finishes each frame
after its batch (smooth, upscale, composite, encode). The CPU path (`cpu_path.py`) does the
work around the model on the CPU, frame by frame; a GPU path does the whole batch on the GPU
and leaves little to finish. `pipeline.ModelPipeline` drives either the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from service.errors import FrameError
from service.frames.codec import EncodedMask
from service.frames.refine import TemporalSmoother
from service.frames.requests import EncodedImage, OutputRequest


@dataclass(frozen=True)
class FrameJob:
    """One frame as its stream hands it in."""

    jpeg: bytes
    request: OutputRequest
    smoother: TemporalSmoother | None = None  # the stream's, applied at the model's size
    sequence: int = 0  # the frame's place in its stream, for the smoother


# What a finished frame leaves as: a mask, or a composited frame.
Finished = tuple[EncodedMask | None, EncodedImage | None]


class StageTimes(NamedTuple):
    """Seconds of one frame in the stages its path ran, by the stage metric's names."""

    decode_s: float
    inference_s: float
    encode_s: float


class FramePath(Protocol):
    """The per-frame work around one model's batches. `Prepared` and `Batched` are the path's
    own types: what a frame is between `prepare` and the batch, and what the batch gives it."""

    max_batch_size: int | None  # frames one batch may hold at most; None: any number
    batches_at_once: int  # batches run side by side, each on its own engine thread

    async def prepare(self, job: FrameJob) -> Any:
        """Before the batch: checks the frame (raises FrameError) and readies it."""
        ...

    def run_batch(self, prepared: Sequence[Any]) -> Sequence[Any | FrameError]:
        """On an engine thread: the batch's results in order; a FrameError fails one frame."""
        ...

    async def finish(self, job: FrameJob, prepared: Any, batched: Any) -> Finished:
        """After the batch: the frame's answer."""
        ...

    def stage_times(
        self, prepare_s: float, batched: Any, batch_s: float, finish_s: float
    ) -> StageTimes:
        """The frame's stages from the seconds it took in `prepare`, in its batch's
        `run_batch` and in `finish`: each path bills its own work to its own stages."""
        ...

    def warm_up(self) -> None:
        """Runs every batch shape once, before the model serves."""
        ...

    def probe(self) -> None:
        """Runs the smallest batch through the model (and the device's codec) once: whether an
        engine that failed works again. Unlike `warm_up`, never skipped for having run."""
        ...

    def padded_size(self, frames: int) -> int:
        """Frames the model computes for a batch of `frames`, padding included."""
        ...
