"""The engine contract: what every engine offers the frame path, and the padding helpers the
engines that run fixed batch shapes share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from models.registry import ModelSpec

if TYPE_CHECKING:
    import torch


class Engine(Protocol):
    """Runs one model on a batch of frames: uint8 RGB in, person probability out.

    An engine runs on its model's engine threads, `batches_at_once` of them: the frame path
    runs that many batches side by side, and an engine that is not thread-safe keeps that
    many copies of its model."""

    name: str  # "tflite", "tensorflow", "torch", "deeplab-tensorflow" or "model-free"
    device: str  # "cpu", "gpu:0", "cuda:0"
    spec: ModelSpec
    batch_sizes: tuple[int, ...]  # frames one run of the model takes, ascending
    # Frames the batcher may hand over at once; None: any number (the engine runs them in parts).
    max_batch_size: int | None
    batches_at_once: int  # batches run side by side, each on its own engine thread

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames at the model's input size -> float32 (N, H, W) in [0, 1]."""
        ...

    def warm_up(self) -> None:
        """Runs every batch shape once so that no request pays for a first run. Called once,
        by the model's batch runner, before the model serves."""
        ...

    def padded_size(self, frames: int) -> int:
        """How many frames the engine computes for a batch of `frames` (padding included)."""
        ...


@runtime_checkable
class DeviceEngine(Engine, Protocol):
    """An engine that also runs a batch already on its device, for a frame path that decodes
    and encodes there (the GPU path): the torch engine."""

    def infer_on_device(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) on `device` -> float32 (N, H, W) there, ordered on the caller's
        current stream."""
        ...


def blank_frames(spec: ModelSpec, count: int) -> np.ndarray:
    return np.zeros((count, spec.input_height, spec.input_width, 3), np.uint8)


def padded_size(frames: int, batch_sizes: tuple[int, ...]) -> int:
    """Frames computed for a batch of `frames` run in chunks of the largest of `batch_sizes`
    (sorted), the last chunk padded up to the next size."""
    largest = batch_sizes[-1]
    full, rest = divmod(frames, largest)
    return full * largest + (next(s for s in batch_sizes if s >= rest) if rest else 0)


def run_padded(
    frames: np.ndarray, batch_sizes: tuple[int, ...], run: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """`run` over `frames` in chunks padded to `batch_sizes` (so that only the shapes warmed up
    ever run); the outputs of the real frames, in order."""
    largest = batch_sizes[-1]
    outputs = []
    for start in range(0, len(frames), largest):
        chunk = frames[start : start + largest]
        size = padded_size(len(chunk), batch_sizes)
        if size > len(chunk):
            padding = np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        outputs.append(run(chunk)[: min(largest, len(frames) - start)])
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
