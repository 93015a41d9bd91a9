"""Runs a segmentation model on a batch of frames: uint8 RGB in, person probability out.

An engine is owned by one thread (the model's engine thread): interpreters are not
thread-safe, and one owner keeps the model's memory and warm state in one place.

- `TFLiteEngine`: the TFLite file with XNNPACK; the fastest engine on this CPU.
- `TensorFlowEngine`: the same model converted to a SavedModel with a free batch dimension
  (`models/convert.py`), padded to a few fixed batch sizes; on a GPU when TensorFlow sees one.
- `DeepLabEngine` (`service/deeplab_engine.py`): a user-supplied DeepLab v3 graph, batched
  where a start-up check allows it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from models.registry import ModelSpec

if TYPE_CHECKING:
    from service.config import ServiceConfig

log = logging.getLogger(__name__)


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

    A batch runs as sub-batches of CHUNK_SIZES, one interpreter allocated per size: on the
    2-core machine XNNPACK costs 1.73 ms/frame at batch 1, 0.90 at 4 and 8, and 1.23 at 16
    (cache pressure), so 8 is the largest size worth running. A batch of 7 runs as 4+2+1,
    which wastes nothing, where padding to 8 would compute an extra frame.
    """

    name = "tflite"
    device = "cpu"
    CHUNK_SIZES = (8, 4, 2, 1)
    batch_sizes = tuple(sorted(CHUNK_SIZES))
    max_batch_size = None

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
        inputs = np.multiply(frames, np.float32(self.spec.input_scale), dtype=np.float32)
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
        for size in self.CHUNK_SIZES:
            self.infer(_blank_frames(self.spec, size))
        log.info("warmed up %s on %s, sub-batches %s", self.spec.name, self.name, self.CHUNK_SIZES)


def _blank_frames(spec: ModelSpec, count: int) -> np.ndarray:
    return np.zeros((count, spec.input_height, spec.input_width, 3), np.uint8)


def configure_tensorflow(config: ServiceConfig) -> str:
    """Sets TensorFlow up once per process and returns the device it will use."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            # Take GPU memory as needed, not all of it at start: other processes share the GPU.
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.threading.set_intra_op_parallelism_threads(config.engine_threads)
    except RuntimeError:
        pass  # TensorFlow already ran in this process (tests): its settings stay
    if config.engine_mixed_precision:
        # A graph rewrite to float16 where it is safe; it acts on GPUs only.
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})
    return "gpu:0" if gpus else "cpu"


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
        largest = self.batch_sizes[-1]
        full, rest = divmod(frames, largest)
        return full * largest + (next(s for s in self.batch_sizes if s >= rest) if rest else 0)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        largest = self.batch_sizes[-1]
        outputs = []
        for start in range(0, len(frames), largest):
            chunk = frames[start : start + largest]
            size = self.padded_size(len(chunk))
            if size > len(chunk):
                padding = np.zeros((size - len(chunk), *chunk.shape[1:]), np.uint8)
                chunk = np.concatenate([chunk, padding])
            alpha = self._run(self._tf.constant(chunk)).numpy()
            outputs.append(alpha[: min(largest, len(frames) - start)])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

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


def create_engine(config: ServiceConfig, spec: ModelSpec, model_path: Path) -> Engine:
    """The engine `config.engine` asks for; `auto` is TensorFlow on a GPU, else the faster."""
    if config.engine == "tflite":
        return TFLiteEngine(spec, model_path, config.engine_threads)
    from models.convert import ensure_savedmodel

    device = configure_tensorflow(config)
    savedmodel = ensure_savedmodel(spec, model_path, Path(config.model_dir))
    tensorflow = TensorFlowEngine(
        spec, savedmodel, device, config.engine_batch_sizes, xla=config.engine_xla
    )
    if config.engine == "tensorflow" or device != "cpu":
        return tensorflow
    tflite = TFLiteEngine(spec, model_path, config.engine_threads)
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
