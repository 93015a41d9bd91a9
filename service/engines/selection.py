"""The one place that builds every engine, DeepLab's included, and picks one for `auto`.

`auto` decides from what the host has, without loading a framework it will not serve with:
the torch engine where PyTorch sees a CUDA device, TensorFlow where only TensorFlow can use the
GPU, and TFLite on a host without a GPU (the faster CPU engine: `make bench` compares the two
at each batch size). So a CPU replica never carries TensorFlow, the largest part of its memory.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.registry import ModelSpec
from service.engines.base import Engine

log = logging.getLogger(__name__)

EngineName = Literal["auto", "tflite", "tensorflow", "torch", "model-free"]


@dataclass(frozen=True)
class EngineSettings:
    """What building an engine needs from the service's config, and nothing more."""

    engine: EngineName = "auto"
    threads: int = 1  # CPU threads of each interpreter, or of TensorFlow's ops
    batches_at_once: int = 2  # batches run side by side: TFLite keeps a model copy for each
    engine_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # padded to: TensorFlow, torch
    mixed_precision: bool = False  # TensorFlow on a GPU: float16 compute
    xla: bool = False  # TensorFlow: compile with XLA
    torch_precision: str = "auto"  # torch on CUDA: float16 where it keeps the masks, or fixed
    model_dir: Path = Path()  # where converted models are cached


@dataclass(frozen=True)
class DeepLabSettings:
    path: Path
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    input_tensor: str = ""
    logits_tensor: str = ""


@dataclass(frozen=True)
class EngineChoice:
    """The engine that serves the selfie models, and why."""

    engine: EngineName
    reason: str


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver shows a device, read without loading any framework."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def choose_engine(requested: EngineName) -> EngineChoice:
    if requested != "auto":
        return EngineChoice(requested, "asked for with --engine")
    if not _nvidia_gpu_present():
        return EngineChoice(
            "tflite", "no GPU on this host: TFLite is the faster CPU engine; TensorFlow not loaded"
        )
    if _installed("torch"):
        import torch

        if torch.cuda.is_available():
            return EngineChoice("torch", f"PyTorch sees {torch.cuda.get_device_name(0)}")
    if _installed("tensorflow"):
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return EngineChoice("tensorflow", "TensorFlow sees the GPU; no PyTorch that does")
        return EngineChoice(
            "tflite", "an NVIDIA driver, but neither PyTorch nor TensorFlow sees a GPU"
        )
    torch_state = "PyTorch sees no CUDA device" if _installed("torch") else "no PyTorch"
    return EngineChoice("tflite", f"an NVIDIA driver, but {torch_state} and no TensorFlow")


def create_engine(settings: EngineSettings, spec: ModelSpec, model_path: Path) -> Engine:
    """The engine `settings.engine` asks for, or the one `auto` picks, for a selfie model."""
    choice = choose_engine(settings.engine)
    log.info("engine for %s: %s (%s)", spec.name, choice.engine, choice.reason)
    match choice.engine:
        case "model-free":
            from service.engines.model_free import ModelFreeEngine

            return ModelFreeEngine(spec, settings.batches_at_once)
        case "tflite":
            from service.engines.tflite import TFLiteEngine

            return TFLiteEngine(spec, model_path, settings.threads, settings.batches_at_once)
        case "torch":
            from service.engines.torch_engine import TorchEngine

            # On CUDA where torch sees it, else on the CPU; batches padded to the same sizes
            # as TensorFlow's, each captured as a CUDA graph at warm-up.
            return TorchEngine(
                spec,
                model_path,
                batch_sizes=settings.engine_batch_sizes,
                batches_at_once=settings.batches_at_once,
                precision=settings.torch_precision,
                threads=settings.threads,
            )
        case _:
            return _tensorflow_engine(settings, spec, model_path)


def _tensorflow_engine(settings: EngineSettings, spec: ModelSpec, model_path: Path) -> Engine:
    from models.convert import ensure_savedmodel
    from service.engines.tensorflow import TensorFlowEngine, configure_tensorflow

    device = configure_tensorflow(settings.threads, settings.mixed_precision)
    savedmodel = ensure_savedmodel(spec, model_path, settings.model_dir)
    return TensorFlowEngine(
        spec,
        savedmodel,
        device,
        settings.engine_batch_sizes,
        xla=settings.xla,
        batches_at_once=settings.batches_at_once,
    )


def create_deeplab_engine(engine: EngineSettings, deeplab: DeepLabSettings) -> Engine:
    """A user's DeepLab v3 graph, always on TensorFlow."""
    from models.deeplab import deeplab_spec
    from service.engines.deeplab import DeepLabEngine
    from service.engines.tensorflow import configure_tensorflow

    device = configure_tensorflow(engine.threads, engine.mixed_precision)
    return DeepLabEngine(
        deeplab_spec(),
        deeplab.path,
        device,
        deeplab.batch_sizes,
        deeplab.input_tensor,
        deeplab.logits_tensor,
        batches_at_once=engine.batches_at_once,
    )
