"""Serves a user's DeepLab v3 graph: batched where a start-up check shows its network takes a
batch, else one frame at a time through the graph's own path.

Frames arrive letterboxed to 513x513 (the model spec's fit). Batched, they are padded to one of
`batch_sizes` (each warmed up) and run in one call of the network (`models.deeplab_batched`);
the batcher never hands over more than the largest size, so a batch is one run and the
responses' `batch_size` is the batch the network ran.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.deeplab import DeepLabLoadError, DeepLabModel
from models.registry import ModelSpec
from service.engines.base import blank_frames, padded_size, run_padded

if TYPE_CHECKING:
    from models.deeplab_batched import BatchedDeepLab

log = logging.getLogger(__name__)


class DeepLabEngine:
    """The `deeplabv3` model: letterboxed uint8 (N, 513, 513, 3) in, person alpha out."""

    name = "deeplab-tensorflow"

    def __init__(
        self,
        spec: ModelSpec,
        path: Path,
        device: str,
        batch_sizes: tuple[int, ...],
        input_tensor: str = "",
        logits_tensor: str = "",
        batches_at_once: int = 1,
    ) -> None:
        self.spec = spec
        self.device = device
        self.batches_at_once = batches_at_once
        self._own = DeepLabModel(path, logits_tensor)
        self._batched, why_not = _batched_network(
            self._own, max(batch_sizes), input_tensor, logits_tensor
        )
        if self._batched is None:
            log.warning("%s runs one frame at a time: %s", spec.name, why_not)
            self.batch_sizes: tuple[int, ...] = (1,)
        else:
            self.batch_sizes = tuple(sorted(batch_sizes))
            log.info(
                "%s runs batched (network %s -> %s), batch sizes %s",
                spec.name,
                self._batched.input_tensor,
                self._batched.logits_tensor,
                self.batch_sizes,
            )

    @property
    def batched(self) -> bool:
        return self._batched is not None

    @property
    def max_batch_size(self) -> int:
        return self.batch_sizes[-1]

    def padded_size(self, frames: int) -> int:
        return padded_size(frames, self.batch_sizes)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        if self._batched is None:
            return np.stack([self._own(frame) for frame in frames])
        return run_padded(frames, self.batch_sizes, self._batched)

    def warm_up(self) -> None:
        for size in self.batch_sizes:
            self.infer(blank_frames(self.spec, size))
        log.info("warmed up %s on %s (%s), batch sizes %s", self.spec.name, self.name,
                 self.device, self.batch_sizes)  # fmt: skip


def _batched_network(
    own: DeepLabModel, largest_batch: int, input_tensor: str, logits_tensor: str
) -> tuple[BatchedDeepLab | None, str]:
    """The checked batched network, or None and why it cannot serve."""
    from models.deeplab_batched import BatchedDeepLab
    from models.deeplab_check import ALPHA_TOLERANCE, compare_batched

    if own.graph_def is None:
        return None, "a SavedModel; only frozen graphs (.pb) run batched"
    try:
        batched = BatchedDeepLab(own.graph_def, input_tensor, logits_tensor)
    except DeepLabLoadError as error:
        flags = "--deeplab-input-tensor and --deeplab-logits-tensor"
        return None, f"{error} (other exports: name the tensors with {flags})"
    mismatch = compare_batched(own, batched, largest_batch)
    if mismatch is not None:
        return None, f"the batched network disagrees with the graph's own path: {mismatch}"
    log.info("batched network agrees with the graph's own path (tolerance %s)", ALPHA_TOLERANCE)
    return batched, ""
