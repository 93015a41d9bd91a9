"""What the GPU benchmark's sections share: the run's settings, and the engine, codec and frame
paths built once, on first use, for the sections that need them. Nothing is kept from a build
that failed, so the next section tries again and fails with its own traceback."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from loadtest.bench.gpu.run import Deadline, Output, SectionOutput
from models.registry import model_spec


class Bench:
    def __init__(self, args: argparse.Namespace, out: Output, deadline: Deadline) -> None:
        self.args = args
        self.summary = out
        self.out: SectionOutput = SectionOutput()  # the running section's
        self.deadline = deadline
        self.device: str = args.device
        self.cuda = args.device.startswith("cuda")
        self.spec = model_spec(args.model)
        self.model_dir: Path = args.model_dir
        self._built: dict[str, Any] = {}

    def model_path(self, name: str | None = None) -> Path:
        return self.model_dir / model_spec(name or self.args.model).file_name

    def _once(self, key: str, build: Any) -> Any:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def engine(self) -> Any:
        """The model as a server runs it: its batch sizes, three batches in flight, warm."""
        from service.engines.torch_engine import TorchEngine

        def build() -> TorchEngine:
            engine = TorchEngine(
                self.spec,
                self.model_path(),
                self.device,
                tuple(self.args.server_batches),
                batches_at_once=3,
                threads=self.args.threads,
            )
            engine.warm_up()
            return engine

        return self._once("engine", build)

    def codec(self) -> Any:
        from service.frames.codec import JpegCodec

        return self._once(
            "codec", lambda: JpegCodec(max_frame_bytes=8 << 20, max_frame_pixels=4096 * 4096)
        )

    def workers(self) -> Any:
        from service.frames.workers import WorkerThreads

        return self._once("workers", lambda: WorkerThreads(2, "bench-codec"))

    def frame_device(self) -> Any:
        from service.frames.gpu_device import CpuFrameDevice, CudaFrameDevice

        return self._once(
            "frame_device",
            lambda: CudaFrameDevice(self.device) if self.cuda else CpuFrameDevice(),
        )

    def gpu_path(self) -> Any:
        """The GPU frame path on this device (through `CpuFrameDevice` on the CPU)."""
        from service.frames.gpu_path import GpuFramePath

        def build() -> GpuFramePath:
            path = GpuFramePath(self.engine(), self.codec(), self.workers(), self.frame_device())
            path.warm_up()
            return path

        return self._once("gpu_path", build)

    def cpu_path(self) -> Any:
        from service.frames.cpu_path import CpuFramePath

        return self._once(
            "cpu_path", lambda: CpuFramePath(self.engine(), self.codec(), self.workers())
        )

    def close(self) -> None:
        if "workers" in self._built:
            self._built["workers"].shutdown()


async def _answers(path: Any, jobs: list) -> tuple[list, list]:
    """The jobs as one batch through `path`: each frame's answer (a FrameError where it
    failed, before or in the batch), and what the batch gave each."""
    from service.errors import FrameError

    prepared: list[Any] = []
    for job in jobs:
        try:
            prepared.append(await path.prepare(job))
        except FrameError as error:
            prepared.append(error)
    ready = [item for item in prepared if not isinstance(item, FrameError)]
    batched = iter(await asyncio.to_thread(path.run_batch, ready) if ready else [])
    results = [item if isinstance(item, FrameError) else next(batched) for item in prepared]
    answers = []
    for job, item, result in zip(jobs, prepared, results, strict=True):
        if isinstance(result, FrameError):
            answers.append(result)
        else:
            answers.append(await path.finish(job, item, result))
    return answers, results


def through(path: Any, jobs: list) -> tuple[list, list]:
    """`_answers` from synchronous code."""
    return asyncio.run(_answers(path, jobs))


def size_of(resolution: str) -> tuple[int, int]:
    width, height = resolution.split("x")
    return int(width), int(height)
