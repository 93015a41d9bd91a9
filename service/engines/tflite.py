"""The TFLite engine: the model's own .tflite file on LiteRT's interpreter with XNNPACK, the
fastest engine on a CPU."""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import ModelSpec
from service.engines.base import blank_frames
from service.engines.sub_batches import SubBatchPlan
from service.timing import seconds_to_run

log = logging.getLogger(__name__)

# One copy of a TFLite model: an interpreter per sub-batch size, with its tensor indexes.
_Interpreters = dict[int, tuple[Any, int, int]]


class TFLiteEngine:
    """The TFLite interpreter with XNNPACK, from LiteRT (tf.lite.Interpreter is deprecated).

    A batch runs as sub-batches, one interpreter allocated per size, so nothing is padded. How
    a batch is split is measured, not assumed: `warm_up()` times one run of each size in
    CANDIDATE_SIZES and keeps the sizes the cheapest splits use (`sub_batches.py`).
    `copies` sets of interpreters let as many batches run at once, each on its own engine
    thread: on a CPU, batches side by side on single-threaded interpreters use the cores better
    than one interpreter's own threads, whose workers spin between the layers (see `make bench`).
    """

    name = "tflite"
    device = "cpu"
    # Sizes of one run tried at warm-up. Batches of 5 or 7 are split into these: an interpreter
    # per copy for each costs start-up time and memory for a split that seldom wins.
    CANDIDATE_SIZES = (1, 2, 3, 4, 6, 8)
    _TIMED_ROUNDS = 2  # the faster of two runs of each size: a run preempted once is no figure
    max_batch_size = None

    def __init__(
        self, spec: ModelSpec, model_path: Path, num_threads: int, copies: int = 1
    ) -> None:
        self.spec = spec
        self.batches_at_once = copies  # each batch in flight takes a copy of its own
        self._copies = copies
        self._plan = SubBatchPlan.fewest_runs(self.CANDIDATE_SIZES)
        self.batch_sizes: tuple[int, ...] = self.CANDIDATE_SIZES
        # The copy used last goes out first: its memory is still in the caches.
        self._free: queue.LifoQueue[_Interpreters] = queue.LifoQueue()
        for _ in range(copies):
            self._free.put(self._interpreters(model_path, num_threads))

    def _interpreters(self, model_path: Path, num_threads: int) -> _Interpreters:
        from ai_edge_litert.interpreter import Interpreter

        interpreters = {}
        for size in self.CANDIDATE_SIZES:
            interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
            input_index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(
                input_index, [size, self.spec.input_height, self.spec.input_width, 3]
            )
            interpreter.allocate_tensors()
            output_index = interpreter.get_output_details()[0]["index"]
            interpreters[size] = (interpreter, input_index, output_index)
        return interpreters

    @property
    def plan(self) -> SubBatchPlan:
        """How batches are split: measured at warm-up, the fewest runs before."""
        return self._plan

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Thread-safe: each call takes a free copy of the model (waiting for one if needed)."""
        interpreters = self._free.get()
        try:
            outputs, start = [], 0
            for size in self._plan.split(len(frames)):
                outputs.append(self._run(interpreters[size], frames[start : start + size]))
                start += size
            return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        finally:
            self._free.put(interpreters)

    def _run(self, interpreter_and_indexes: tuple[Any, int, int], frames: np.ndarray) -> np.ndarray:
        interpreter, input_index, output_index = interpreter_and_indexes
        scale, offset = np.float32(self.spec.input_scale), np.float32(self.spec.input_offset)
        # Normalise straight into the interpreter's input buffer: no float copy to copy.
        # The view must be gone before invoke(), which refuses to run while one is held.
        np.multiply(frames, scale, out=interpreter.tensor(input_index)())
        if offset:
            np.add(interpreter.tensor(input_index)(), offset, out=interpreter.tensor(input_index)())
        interpreter.invoke()
        return interpreter.get_tensor(output_index)[..., 0]

    def padded_size(self, frames: int) -> int:
        return frames  # sub-batches add up to the batch exactly: nothing is padded

    def warm_up(self) -> None:
        """Runs and times every size on the first copy, plans the splits from those times and
        lets go of the interpreters no split uses; then runs the sizes kept on every copy."""
        copies = [self._free.get() for _ in range(self._copies)]  # all: each one runs
        self._plan_from_timings(copies[0])
        for interpreters in copies:
            for size in set(interpreters) - set(self.batch_sizes):
                del interpreters[size]
            for size in self.batch_sizes:
                self._run(interpreters[size], blank_frames(self.spec, size))
            self._free.put(interpreters)

    def _plan_from_timings(self, interpreters: _Interpreters) -> None:
        for size, interpreter in interpreters.items():
            self._run(interpreter, blank_frames(self.spec, size))
        seconds_per_run = {}
        for size, interpreter in interpreters.items():
            frames = blank_frames(self.spec, size)
            seconds_per_run[size] = min(
                seconds_to_run(lambda i=interpreter, f=frames: self._run(i, f))
                for _ in range(self._TIMED_ROUNDS)
            )
        self._plan = SubBatchPlan(seconds_per_run)
        self.batch_sizes = self._plan.sizes_used
        log.info(
            "warmed up %s on %s, %d copies; one run costs %s; batches split into runs of %s",
            self.spec.name,
            self.name,
            self._copies,
            self._plan.describe(),
            self.batch_sizes,
        )
