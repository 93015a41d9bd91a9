"""Runs a segmentation model on a batch of frames: uint8 RGB in, person probability out.

An engine runs on its model's engine threads, one per batch in flight (`max_batches_in_flight`):
a TFLite interpreter is not thread-safe, so the TFLite engine keeps one copy of the model per
engine thread; TensorFlow's functions may be called from several threads.

- `TFLiteEngine`: the TFLite file with XNNPACK; the fastest engine on this CPU.
- `TensorFlowEngine`: the same model converted to a SavedModel with a free batch dimension
  (`models/convert.py`), padded to a few fixed batch sizes; on a GPU when TensorFlow sees one.
- `DeepLabEngine` (`service/deeplab_engine.py`): a user-supplied DeepLab v3 graph, batched
  where a start-up check allows it.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models.registry import ModelSpec
from service.sub_batches import SubBatchPlan

if TYPE_CHECKING:
    from service.config import ServiceConfig

log = logging.getLogger(__name__)

# One copy of a TFLite model: an interpreter per sub-batch size, with its tensor indexes.
_Interpreters = dict[int, tuple[Any, int, int]]


class Engine(Protocol):
    name: str  # "tflite", "tensorflow" or "deeplab-tensorflow"
    device: str  # "cpu", "gpu:0"
    spec: ModelSpec
    batch_sizes: tuple[int, ...]  # frames one run of the model takes, ascending
    # Frames the batcher may hand over at once; None: any number (the engine runs them in parts).
    max_batch_size: int | None

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

    A batch runs as sub-batches, one interpreter allocated per size, so nothing is padded. How
    a batch is split is measured, not assumed: `warm_up()` times one run of each size in
    CANDIDATE_SIZES and keeps the sizes the cheapest splits use (`service/sub_batches.py`).
    `copies` sets of interpreters let as many batches run at once, each on its own engine
    thread: on a CPU, batches side by side on single-threaded interpreters use the cores better
    than one interpreter's own threads, whose workers spin between the layers (see `make bench`).
    """

    name = "tflite"
    device = "cpu"
    # Sizes of one run tried at warm-up. Batches of 5 or 7 are split into these; leaving those
    # two out saves start-up time and memory, and on the development machine neither beat 3.
    CANDIDATE_SIZES = (1, 2, 3, 4, 6, 8)
    _TIMED_ROUNDS = 2  # the faster of two runs of each size: a run preempted once is no figure
    max_batch_size = None

    def __init__(
        self, spec: ModelSpec, model_path: Path, num_threads: int, copies: int = 1
    ) -> None:
        self.spec = spec
        self._copies = copies
        self._plan = SubBatchPlan.fewest_runs(self.CANDIDATE_SIZES)
        self._planned = False  # the plan is measured once, at the first warm-up
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
        """The first time, runs and times every size on the first copy, plans the splits from
        those times and lets go of the interpreters no split uses; then runs the sizes kept on
        every copy. A later call (`--engine auto` warms the engine before comparing, and the
        pipeline again) keeps the plan."""
        copies = [self._free.get() for _ in range(self._copies)]  # all: each one runs
        if not self._planned:
            self._plan_from_timings(copies)
        for interpreters in copies:
            for size in set(interpreters) - set(self.batch_sizes):
                del interpreters[size]
            for size in self.batch_sizes:
                self._run(interpreters[size], _blank_frames(self.spec, size))
            self._free.put(interpreters)

    def _plan_from_timings(self, copies: list[_Interpreters]) -> None:
        for size, interpreter in copies[0].items():
            self._run(interpreter, _blank_frames(self.spec, size))
        seconds_per_run = {
            size: min(
                _seconds_to_run(self._run, interpreter, _blank_frames(self.spec, size))
                for _ in range(self._TIMED_ROUNDS)
            )
            for size, interpreter in copies[0].items()
        }
        self._plan = SubBatchPlan(seconds_per_run)
        self.batch_sizes = self._plan.sizes_used
        self._planned = True
        log.info(
            "warmed up %s on %s, %d copies; one run costs %s; batches split into runs of %s",
            self.spec.name,
            self.name,
            len(copies),
            self._plan.describe(),
            self.batch_sizes,
        )


def _seconds_to_run(run: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


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


def _blank_frames(spec: ModelSpec, count: int) -> np.ndarray:
    return np.zeros((count, spec.input_height, spec.input_width, 3), np.uint8)


def tensorflow_available() -> bool:
    """Whether TensorFlow is installed: the lean CPU image leaves it out (the `tensorflow` extra
    brings it), and then `auto` serves with TFLite without importing anything."""
    return importlib.util.find_spec("tensorflow") is not None


_tensorflow_device: str | None = None  # set by the first configure_tensorflow() of the process


def configure_tensorflow(config: ServiceConfig) -> str:
    """Sets TensorFlow up and returns the device it will use.

    TensorFlow takes its device and thread settings once per process, before it first runs:
    a later call (a second server in the same process) keeps the first settings, and so does
    a process where TensorFlow already ran (a model conversion before the server started)."""
    global _tensorflow_device
    import tensorflow as tf

    if _tensorflow_device is None:
        gpus = tf.config.list_physical_devices("GPU")
        try:
            for gpu in gpus:
                # Take GPU memory as needed, not all of it at start: other processes share it.
                tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.threading.set_intra_op_parallelism_threads(config.engine_threads)
        except RuntimeError as error:  # TensorFlow already ran here: it is set up for good
            log.warning("TensorFlow keeps the settings it started with: %s", error)
        _tensorflow_device = "gpu:0" if gpus else "cpu"
    if config.engine_mixed_precision:
        # A graph rewrite to float16 where it is safe; it acts on GPUs only.
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})
    return _tensorflow_device


class TensorFlowEngine:
    """The converted SavedModel, batches padded to `batch_sizes` so that the traced graph of
    each size is reused; every size is run once at warm-up so no request pays for tracing."""

    name = "tensorflow"
    max_batch_size = None

    def __init__(
        self,
        spec: ModelSpec,
        savedmodel_dir: Path,
        device: str,
        batch_sizes: tuple[int, ...],
        xla: bool = False,
    ) -> None:
        import tensorflow as tf

        self.spec = spec
        self.device = device
        self.batch_sizes = tuple(sorted(batch_sizes))
        self._tf = tf
        self._model = tf.saved_model.load(str(savedmodel_dir))
        signature = tf.TensorSpec([None, spec.input_height, spec.input_width, 3], tf.uint8)
        self._run = tf.function(self._model.__call__, input_signature=[signature], jit_compile=xla)

    def padded_size(self, frames: int) -> int:
        return padded_size(frames, self.batch_sizes)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return run_padded(
            frames, self.batch_sizes, lambda chunk: self._run(self._tf.constant(chunk)).numpy()
        )

    def warm_up(self) -> None:
        for size in self.batch_sizes:
            self.infer(_blank_frames(self.spec, size))
        log.info(
            "warmed up %s on %s (%s), batch sizes %s",
            self.spec.name,
            self.name,
            self.device,
            self.batch_sizes,
        )


def measure_ms_per_frame(engine: Engine, batch: int = 8, runs: int = 5) -> float:
    """Median engine time per frame at `batch`, after one unmeasured run."""
    frames = np.random.default_rng(0).integers(
        0, 256, (batch, engine.spec.input_height, engine.spec.input_width, 3), np.uint8
    )
    engine.infer(frames)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.infer(frames)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / batch * 1e3


class ModelFreeEngine:
    """No model at all: every frame's alpha is the same constant. For measuring the front end
    alone (decode, batching, encode, gRPC, the event loop), as in `make bench`: it tells how
    many frames one server process can feed a model on a GPU. Never for serving."""

    name = "model-free"
    device = "cpu"
    max_batch_size = None
    ALPHA = 0.5

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

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


def create_engine(config: ServiceConfig, spec: ModelSpec, model_path: Path) -> Engine:
    """The engine `config.engine` asks for; `auto` is TensorFlow on a GPU, else the faster."""
    if config.engine == "model-free":
        return ModelFreeEngine(spec)
    if config.engine == "tflite":
        return TFLiteEngine(
            spec, model_path, config.engine_threads, copies=config.max_batches_in_flight
        )
    if config.engine == "auto" and not tensorflow_available():
        log.info("engine auto for %s: TensorFlow is not installed; serving with tflite", spec.name)
        return TFLiteEngine(
            spec, model_path, config.engine_threads, copies=config.max_batches_in_flight
        )
    from models.convert import ensure_savedmodel

    device = configure_tensorflow(config)
    savedmodel = ensure_savedmodel(spec, model_path, Path(config.model_dir))
    tensorflow = TensorFlowEngine(
        spec, savedmodel, device, config.engine_batch_sizes, xla=config.engine_xla
    )
    if config.engine == "tensorflow" or device != "cpu":
        return tensorflow
    tflite = TFLiteEngine(
        spec, model_path, config.engine_threads, copies=config.max_batches_in_flight
    )
    tflite.warm_up()  # times its runs and plans its splits: compare it as it will serve
    costs = {engine: measure_ms_per_frame(engine) for engine in (tflite, tensorflow)}
    chosen = min(costs, key=costs.__getitem__)
    log.info(
        "engine auto for %s on the CPU: tflite %.2f ms/frame, tensorflow %.2f ms/frame at "
        "batch 8; serving with %s",
        spec.name,
        costs[tflite],
        costs[tensorflow],
        chosen.name,
    )
    return chosen
