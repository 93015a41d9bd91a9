"""The model-free engine: no model at all, for measuring the front end alone."""

from __future__ import annotations

import logging

import numpy as np

from models.registry import ModelSpec

log = logging.getLogger(__name__)


class ModelFreeEngine:
    """No model at all: every frame's alpha is the same constant. For measuring the front end
    alone (decode, batching, encode, gRPC, the event loop), as in `make bench`: it tells how
    many frames one server process can feed a model on a GPU. Never for serving."""

    name = "model-free"
    device = "cpu"
    max_batch_size = None
    ALPHA = 0.5

    def __init__(self, spec: ModelSpec, batches_at_once: int = 1) -> None:
        self.spec = spec
        self.batches_at_once = batches_at_once

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return np.full(
            (len(frames), self.spec.input_height, self.spec.input_width), self.ALPHA, np.float32
        )

    def padded_size(self, frames: int) -> int:
        return frames

    def warm_up(self) -> None:
        log.warning(
            "%s runs WITHOUT a model (engine model-free): for capacity tests only", self.spec.name
        )
