"""The TensorFlow engine: the model converted to a SavedModel with a free batch dimension
(`models/convert.py`), padded to a few fixed batch sizes; on a GPU when TensorFlow sees one.
Also TensorFlow's process-wide set-up, which the DeepLab engine shares."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.registry import ModelSpec
from service.engines.base import blank_frames, padded_size, run_padded

log = logging.getLogger(__name__)

_tensorflow_device: str | None = None  # set by the first configure_tensorflow() of the process


def configure_tensorflow(threads: int, mixed_precision: bool = False) -> str:
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
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError as error:  # TensorFlow already ran here: it is set up for good
            log.warning("TensorFlow keeps the settings it started with: %s", error)
        _tensorflow_device = "gpu:0" if gpus else "cpu"
    if mixed_precision:
        # A graph rewrite to float16 where it is safe; it acts on GPUs only.
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})
    return _tensorflow_device


class TensorFlowEngine:
    """The converted SavedModel, batches padded to `batch_sizes` so that the traced graph of
    each size is reused; every size is run once at warm-up so no request pays for tracing.
    Its functions may be called from several threads at once."""

    name = "tensorflow"
    max_batch_size = None

    def __init__(
        self,
        spec: ModelSpec,
        savedmodel_dir: Path,
        device: str,
        batch_sizes: tuple[int, ...],
        xla: bool = False,
        batches_at_once: int = 1,
    ) -> None:
        import tensorflow as tf

        self.spec = spec
        self.device = device
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.batches_at_once = batches_at_once
        self._tf = tf
        self._model = tf.saved_model.load(str(savedmodel_dir))
        signature = tf.TensorSpec([None, spec.input_height, spec.input_width, 3], tf.uint8)
        self._run = tf.function(self._model.__call__, input_signature=[signature], jit_compile=xla)

    def padded_size(self, frames: int) -> int:
        return padded_size(frames, self.batch_sizes)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return run_padded(frames, self.batch_sizes, self._run_chunk)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self._run(self._tf.constant(chunk)).numpy()

    def warm_up(self) -> None:
        for size in self.batch_sizes:
            self.infer(blank_frames(self.spec, size))
        log.info(
            "warmed up %s on %s (%s), batch sizes %s",
            self.spec.name,
            self.name,
            self.device,
            self.batch_sizes,
        )
