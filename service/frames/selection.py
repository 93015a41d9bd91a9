"""The one place that picks a model's frame path: on the GPU where its engine runs on CUDA and
torchvision's CUDA JPEG works there, on the CPU everywhere else."""

from __future__ import annotations

import logging

from service.engines.base import DeviceEngine, Engine
from service.frames.codec import JpegCodec
from service.frames.cpu_path import CpuFramePath
from service.frames.gpu_device import CudaFrameDevice
from service.frames.gpu_path import GpuFramePath
from service.frames.path import FramePath
from service.frames.workers import WorkerThreads

log = logging.getLogger(__name__)


def create_frame_path(engine: Engine, codec: JpegCodec, codec_workers: WorkerThreads) -> FramePath:
    name, device = engine.spec.name, engine.device
    if not device.startswith("cuda"):
        log.info("%s: the %s engine runs on %s; frames on the CPU", name, engine.name, device)
        return CpuFramePath(engine, codec, codec_workers)
    if not isinstance(engine, DeviceEngine):
        log.info(
            "%s: the %s engine takes frames from the host; frames on the CPU", name, engine.name
        )
        return CpuFramePath(engine, codec, codec_workers)
    if engine.spec.fit != "stretch":
        log.info("%s: letterboxed input; frames decoded and encoded on the CPU", name)
        return CpuFramePath(engine, codec, codec_workers)
    frame_device = CudaFrameDevice.available(device)
    if frame_device is None:
        log.warning("%s: torchvision's CUDA JPEG does not work (above); frames on the CPU", name)
        return CpuFramePath(engine, codec, codec_workers)
    log.info("%s: frames decoded and encoded on %s (nvJPEG)", name, device)
    return GpuFramePath(engine, codec, codec_workers, frame_device)
