"""Runs a segmentation model on a batch of frames: uint8 RGB in, person probability out.

An engine is owned by one thread (the model's engine thread): interpreters are not
thread-safe, and one owner keeps the model's memory and warm state in one place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from models.registry import ModelSpec

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str  # "tflite"
    device: str  # "cpu", "gpu:0"
    spec: ModelSpec

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames at the model's input size -> float32 (N, H, W) in [0, 1]."""
        ...

    def warm_up(self) -> None:
        """Runs every batch shape once so that no request pays for a first run."""
        ...

    def padded_size(self, frames: int) -> int:
        """How many frames the engine computes for a batch of `frames` (padding included)."""
        ...


class TFLiteEngine:
    """The TFLite interpreter with XNNPACK, from LiteRT (tf.lite.Interpreter is deprecated).

    A batch runs as sub-batches of CHUNK_SIZES, one interpreter allocated per size: on the
    2-core machine XNNPACK costs 1.73 ms/frame at batch 1, 0.90 at 4 and 8, and 1.23 at 16
    (cache pressure), so 8 is the largest size worth running. A batch of 7 runs as 4+2+1,
    which wastes nothing, where padding to 8 would compute an extra frame.
    """

    name = "tflite"
    device = "cpu"
    CHUNK_SIZES = (8, 4, 2, 1)

    def __init__(self, spec: ModelSpec, model_path: Path, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        self._interpreters = {}
        for size in self.CHUNK_SIZES:
            interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
            input_index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(
                input_index, [size, spec.input_height, spec.input_width, 3]
            )
            interpreter.allocate_tensors()
            output_index = interpreter.get_output_details()[0]["index"]
            self._interpreters[size] = (interpreter, input_index, output_index)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        inputs = frames.astype(np.float32) * np.float32(self.spec.input_scale)
        if self.spec.input_offset:
            inputs += np.float32(self.spec.input_offset)
        outputs = []
        start = 0
        while start < len(inputs):
            size = next(s for s in self.CHUNK_SIZES if s <= len(inputs) - start)
            interpreter, input_index, output_index = self._interpreters[size]
            interpreter.set_tensor(input_index, inputs[start : start + size])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(output_index)[..., 0])
            start += size
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def padded_size(self, frames: int) -> int:
        return frames  # sub-batches add up to the batch exactly: nothing is padded

    def warm_up(self) -> None:
        shape = (1, self.spec.input_height, self.spec.input_width, 3)
        for size in self.CHUNK_SIZES:
            self.infer(np.zeros((size, *shape[1:]), np.uint8))
        log.info("warmed up %s on %s, sub-batches %s", self.spec.name, self.name, self.CHUNK_SIZES)


def create_engine(engine_name: str, spec: ModelSpec, model_path: Path, num_threads: int) -> Engine:
    if engine_name == "tflite":
        return TFLiteEngine(spec, model_path, num_threads)
    raise ValueError(f"unknown engine {engine_name!r}")
