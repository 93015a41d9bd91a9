"""The selfie models in PyTorch (`models/torch_target.py`), on the CPU or on a CUDA GPU.

On CUDA the model is tiny (~64 M multiply-adds a frame) and a batch of a few frames is bound by
kernel launches, not arithmetic, so:

- every batch size is captured once as a CUDA graph at warm-up, and batches are padded to them;
- each batch in flight has its own set of graphs (their static buffers are its own), its own
  CUDA stream and its own pinned host buffers, so batches on several engine threads overlap
  their copies and their kernels;
- activations are channels_last (the NHWC byte order the frames arrive in);
- half precision is used where it holds the masks: at warm-up, `precision="auto"` compares the
  float16 masks with the float32 ones on photos of people and keeps float16 only when every
  frame's IoU is at least HALF_MIN_IOU.

On the CPU nothing is padded: a batch runs in one call, in float32.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.registry import ModelSpec
from service.engines.base import blank_frames, padded_size

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HALF_MIN_IOU = 0.99  # every test frame's float16 mask against its float32 mask, at 0.5
PRECISIONS = ("auto", "float32", "float16")


def chunks(frames: int, batch_sizes: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(start, real frames, padded size) of each run that computes `frames`."""
    largest, runs = batch_sizes[-1], []
    for start in range(0, frames, largest):
        real = min(largest, frames - start)
        runs.append((start, real, next(s for s in batch_sizes if s >= real)))
    return runs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two person masks (alpha >= 0.5); 1.0 where both are empty."""
    a, b = a >= 0.5, b >= 0.5
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def half_holds(full: np.ndarray, half: np.ndarray, least: float = HALF_MIN_IOU) -> bool:
    """Whether float16 keeps every frame's mask: the worst frame's IoU is at least `least`."""
    return min(mask_iou(f, h) for f, h in zip(full, half, strict=True)) >= least


@dataclass
class _InFlight:
    """What one batch in flight owns on CUDA: its stream, its graphs with their static device
    buffers, its pinned host buffers. Nothing here is shared with another batch."""

    stream: Any
    pool: Any
    graphs: dict[int, Any] = field(default_factory=dict)
    device_in: dict[int, Any] = field(default_factory=dict)  # uint8 (n, H, W, 3)
    device_out: dict[int, Any] = field(default_factory=dict)  # float32 (n, H, W)
    host_in: dict[int, Any] = field(default_factory=dict)  # pinned
    host_out: dict[int, Any] = field(default_factory=dict)  # pinned


class TorchEngine:
    """The model as a torch module: `device` "cpu" or "cuda[:n]" (None: CUDA where torch sees
    it); `batches_at_once` sets of CUDA graphs let as many engine threads run batches at once."""

    name = "torch"
    max_batch_size = None

    def __init__(
        self,
        spec: ModelSpec,
        model_path: Path,
        device: str | None = None,
        batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
        batches_at_once: int = 1,
        precision: str = "auto",
        threads: int | None = None,
        cuda_graphs: bool = True,
        check_frames: np.ndarray | None = None,
    ) -> None:
        import torch

        from models.torch_target import build_torch_module

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; was {precision!r}")
        self.spec = spec
        self._torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._cuda = torch.device(device).type == "cuda"
        self.device = str(torch.device(device)) if self._cuda else "cpu"
        if self._cuda and torch.device(device).index is None:
            self.device = f"cuda:{torch.cuda.current_device()}"
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.precision = "float32" if not self._cuda else precision
        self._cuda_graphs = cuda_graphs and self._cuda
        self._check_frames = check_frames
        if threads is not None and not self._cuda:
            torch.set_num_threads(threads)
        module = build_torch_module(spec, model_path)
        if self._cuda:
            module = module.to(self.device).to(memory_format=torch.channels_last)
        self._modules = {"float32": module}
        if self.precision == "float16":
            self._modules["float16"] = copy.deepcopy(module).half()
        self._in_flight: queue.LifoQueue[_InFlight] = queue.LifoQueue()
        self.batches_at_once = batches_at_once
        self._warmed = False
        self._warm_lock = threading.Lock()

    @property
    def _module(self) -> torch.nn.Module:
        return self._modules.get(self.precision, self._modules["float32"])  # "auto" till warm

    def padded_size(self, frames: int) -> int:
        return padded_size(frames, self.batch_sizes) if self._cuda else frames

    # --- running ---------------------------------------------------------------------------

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, H, W). Thread-safe: on CUDA each call takes a
        free batch-in-flight set (waiting for one if all are busy)."""
        torch = self._torch
        if not frames.flags.writeable:  # torch warns on read-only arrays (cached frames)
            frames = frames.copy()
        if not self._cuda:
            with torch.inference_mode():
                return self._module(torch.from_numpy(np.ascontiguousarray(frames))).numpy()
        if not self._cuda_graphs or not self._warmed:
            with torch.inference_mode():
                alpha = self._module(torch.from_numpy(frames).to(self.device))
                return alpha.cpu().numpy()
        slot = self._in_flight.get()
        try:
            outputs = []
            with torch.cuda.stream(slot.stream):
                for start, real, size in chunks(len(frames), self.batch_sizes):
                    host_in = slot.host_in[size].numpy()
                    host_in[:real] = frames[start : start + real]
                    host_in[real:] = 0  # padding: blank frames, never a stale one
                    slot.device_in[size].copy_(slot.host_in[size], non_blocking=True)
                    slot.graphs[size].replay()
                    slot.host_out[size].copy_(slot.device_out[size], non_blocking=True)
                    slot.stream.synchronize()
                    outputs.append(slot.host_out[size][:real].numpy().copy())
            return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        finally:
            self._in_flight.put(slot)

    def infer_on_device(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) already on this engine's GPU -> float32 (N, H, W) there, ordered
        on the caller's current stream (the GPU frame path). Thread-safe like `infer`."""
        torch = self._torch
        if not self._cuda_graphs or not self._warmed:
            with torch.inference_mode():
                return self._module(frames)
        slot = self._in_flight.get()
        try:
            caller = torch.cuda.current_stream()
            outputs = []
            slot.stream.wait_stream(caller)  # the frames were written on the caller's stream
            with torch.cuda.stream(slot.stream):
                for start, real, size in chunks(len(frames), self.batch_sizes):
                    slot.device_in[size][:real].copy_(frames[start : start + real])
                    slot.device_in[size][real:].zero_()
                    slot.graphs[size].replay()
                    outputs.append(slot.device_out[size][:real].clone())
            caller.wait_stream(slot.stream)
            # The clones are read on the caller's stream: keep their memory until it has.
            for output in outputs:
                output.record_stream(caller)
            return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        finally:
            self._in_flight.put(slot)

    # --- warm-up -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Runs every batch size once; on CUDA, first chooses the precision (when "auto"),
        then captures one CUDA graph per batch size for each batch in flight. Idempotent."""
        with self._warm_lock:
            if self._warmed:
                return
            if self._cuda and self.precision == "auto":
                self.precision = self._measure_precision()
            if self._cuda_graphs:
                try:
                    slots = [self._capture() for _ in range(self.batches_at_once)]
                except RuntimeError as error:  # serve without graphs rather than not at all
                    log.warning("%s: CUDA graph capture failed (%s)", self.spec.name, error)
                    self._cuda_graphs = False
                else:
                    for slot in slots:
                        self._in_flight.put(slot)
            if not self._cuda_graphs:
                for size in self.batch_sizes:
                    self.infer(blank_frames(self.spec, size))
            self._warmed = True
        log.info(
            "warmed up %s on %s (%s, %s%s), batch sizes %s",
            self.spec.name,
            self.name,
            self.device,
            self.precision,
            f", CUDA graphs x{self.batches_at_once}" if self._cuda_graphs else "",
            self.batch_sizes,
        )

    def _shape(self, size: int) -> tuple[int, int, int, int]:
        return (size, self.spec.input_height, self.spec.input_width, 3)

    def _measure_precision(self) -> str:
        torch = self._torch
        frames = self._check_frames
        if frames is None:
            frames = photo_check_frames(self.spec)
        if frames is None:
            log.info("no photos to check float16 on: %s runs in float32", self.spec.name)
            return "float32"
        half = copy.deepcopy(self._modules["float32"]).half()
        with torch.inference_mode():
            device_frames = torch.from_numpy(frames).to(self.device)
            full_alpha = self._modules["float32"](device_frames).cpu().numpy()
            half_alpha = half(device_frames).cpu().numpy()
        worst = min(mask_iou(f, h) for f, h in zip(full_alpha, half_alpha, strict=True))
        chosen = "float16" if worst >= HALF_MIN_IOU else "float32"
        if chosen == "float16":
            self._modules["float16"] = half
        log.info(
            "%s: float16 masks against float32 on %d photos: worst IoU %.4f (at least %.2f "
            "needed); runs in %s",
            self.spec.name,
            len(frames),
            worst,
            HALF_MIN_IOU,
            chosen,
        )
        return chosen

    def _capture(self) -> _InFlight:
        torch = self._torch
        slot = _InFlight(stream=torch.cuda.Stream(self.device), pool=torch.cuda.graph_pool_handle())
        module = self._module
        # Largest first: the smaller graphs reuse the pool's blocks (one batch at a time runs
        # in a set, so its graphs never run at once).
        for size in sorted(self.batch_sizes, reverse=True):
            device_in = torch.zeros(self._shape(size), dtype=torch.uint8, device=self.device)
            with torch.inference_mode():
                slot.stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(slot.stream):
                    for _ in range(2):  # cuDNN picks its algorithms outside the capture
                        module(device_in)
                torch.cuda.current_stream().wait_stream(slot.stream)
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads' CUDA work (a model already serving) goes on.
                with torch.cuda.graph(
                    graph, pool=slot.pool, stream=slot.stream, capture_error_mode="thread_local"
                ):
                    device_out = module(device_in)
            slot.graphs[size], slot.device_in[size], slot.device_out[size] = (
                graph,
                device_in,
                device_out,
            )
            slot.host_in[size] = torch.zeros(self._shape(size), dtype=torch.uint8).pin_memory()
            slot.host_out[size] = torch.zeros(tuple(device_out.shape)).pin_memory()
            graph.replay()
        slot.stream.synchronize()
        return slot


def photo_check_frames(spec: ModelSpec, batch: int = 8) -> np.ndarray | None:
    """Photos of people at the model's input (models/verify.py), or None where the packages
    that ship them are not installed."""
    try:
        from models.verify import photo_frames

        return photo_frames(spec, batch)
    except ImportError:
        return None
