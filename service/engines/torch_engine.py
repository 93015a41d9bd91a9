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
  frame's IoU is at least HALF_MIN_IOU;
- float32 is IEEE float32, never TF32 (which cuDNN's convolutions use by default): set before
  the float16 decision and before any graph is captured (a graph keeps the setting it was
  captured with), for the decision, the parity with the CPU and serving alike;
- a batch size whose graph fails to capture runs eagerly; the others keep their graphs, and
  `graph_sizes` says which.

On the CPU nothing is padded: a batch runs in one call, in float32.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.registry import ModelSpec
from service.engines.base import blank_frames, padded_size
from service.engines.cuda_graphs import InFlight, capture, run_size

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HALF_MIN_IOU = 0.99  # every test frame's float16 mask against its float32 mask, at 0.5
PRECISIONS = ("auto", "float32", "float16")
FP32_PRECISION = "ieee"  # torch's name for float32 without TF32


def use_ieee_float32() -> None:
    """float32 convolutions and matmuls in IEEE float32, not TF32, process-wide (torch 2.9 and
    later: `fp32_precision`; mixing it with the legacy `allow_tf32` flags is an error)."""
    import torch

    torch.backends.cudnn.conv.fp32_precision = FP32_PRECISION
    torch.backends.cuda.matmul.fp32_precision = FP32_PRECISION


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
        self.graph_sizes: tuple[int, ...] = ()  # batch sizes that replay a CUDA graph
        if self._cuda:
            use_ieee_float32()
            module = module.to(self.device).to(memory_format=torch.channels_last)
        self._modules = {"float32": module}
        if self.precision == "float16":
            self._modules["float16"] = copy.deepcopy(module).half()
        self._in_flight: queue.LifoQueue[InFlight] = queue.LifoQueue()
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
            with torch.cuda.stream(slot.stream), torch.inference_mode():
                for start, real, size in chunks(len(frames), self.batch_sizes):
                    host_in = slot.host_in[size].numpy()
                    host_in[:real] = frames[start : start + real]
                    host_in[real:] = 0  # padding: blank frames, never a stale one
                    device_in = slot.device_in[size]
                    device_in.copy_(slot.host_in[size], non_blocking=True)
                    device_out = run_size(slot, self._module, size, device_in)
                    slot.host_out[size].copy_(device_out, non_blocking=True)
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
                    device_out = run_size(slot, self._module, size, slot.device_in[size])
                    outputs.append(device_out[:real].clone())
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
                slots = [
                    capture(
                        self._module, self._shape, self.batch_sizes, self.device, self.spec.name
                    )
                    for _ in range(self.batches_at_once)
                ]
                self.graph_sizes = tuple(
                    size for size in self.batch_sizes if all(size in s.graphs for s in slots)
                )
                for slot in slots:
                    self._in_flight.put(slot)
            else:
                for size in self.batch_sizes:
                    self.infer(blank_frames(self.spec, size))
            self._warmed = True
        eager = [size for size in self.batch_sizes if size not in self.graph_sizes]
        log.info(
            "warmed up %s on %s (%s, %s%s), batch sizes %s%s",
            self.spec.name,
            self.name,
            self.device,
            self.precision,
            f", float32 {FP32_PRECISION}" if self._cuda else "",
            self.batch_sizes,
            f"; CUDA graphs x{self.batches_at_once} for {self.graph_sizes}, eager for {eager}"
            if self._cuda_graphs
            else "",
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


def photo_check_frames(spec: ModelSpec, batch: int = 8) -> np.ndarray | None:
    """Photos of people at the model's input (models/verify.py), or None where the packages
    that ship them are not installed."""
    try:
        from models.verify import photo_frames

        return photo_frames(spec, batch)
    except ImportError:
        return None
