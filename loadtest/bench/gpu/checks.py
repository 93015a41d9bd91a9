"""The GPU benchmark's self-checks of what ran and of the device's own state, run before its
long load sections: versions, each model's path and precision, graphs against eager runs, and
memory over many batches (decoding's checks in `decode_checks`, the composites' in
`composites`). Each is a section of `run.py`; on a CPU they run through `CpuFrameDevice`, and
those that need CUDA are skipped."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from loadtest.bench.gpu.bench import Bench, size_of, through
from loadtest.bench.gpu.composites import composite_jobs
from loadtest.bench.gpu.run import CheckFailed


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _loaded_library(fragment: str) -> str:
    """The path of a shared library this process has loaded, from /proc/self/maps."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if fragment in line and "/" in line}
    return ", ".join(sorted(paths)) or "not loaded"


def _fp32_flags() -> str:
    import torch

    conv = torch.backends.cudnn.conv.fp32_precision
    matmul = torch.backends.cuda.matmul.fp32_precision
    return f"cuDNN conv fp32_precision={conv}, CUDA matmul fp32_precision={matmul}"


def environment(bench: Bench) -> None:
    import grpc
    import torch

    from service.frames.codec import strict_turbojpeg

    out = bench.out
    out.line(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}")  # fmt: skip
    try:
        import torchvision

        build = getattr(torchvision.version, "cuda", None)
        out.line(f"torchvision {torchvision.__version__} (built for CUDA {build}) at "
                 f"{torchvision.__file__}")  # fmt: skip
    except ImportError as error:
        out.line(f"torchvision: not importable ({error})")
    if bench.cuda:
        props = torch.cuda.get_device_properties(bench.device)
        driver = "unknown (no nvidia-smi)"
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            driver = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
        out.line(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
                 f"{props.major}.{props.minor}, driver {driver.strip()}")  # fmt: skip
    else:
        out.line("GPU: none (no CUDA)")
    out.line(f"float32 flags before any engine: {_fp32_flags()}")
    out.line(f"grpcio {grpc.__version__}, protobuf {_version('protobuf')}, "
             f"numpy {np.__version__}, opencv {_version('opencv-python-headless')}")  # fmt: skip
    strict_turbojpeg()
    out.line(f"libturbojpeg: {_loaded_library('turbojpeg')} (PyTurboJPEG "
             f"{_version('PyTurboJPEG')})")  # fmt: skip
    out.record("environment", torch=torch.__version__, cuda=torch.version.cuda,
               fp32_flags=_fp32_flags(), turbojpeg=_loaded_library("turbojpeg"))  # fmt: skip


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def frame_path(bench: Bench) -> None:
    """The path each model gets as the server picks it, and why (its log), with its engine's
    precision and graphs."""
    from models.registry import model_spec
    from service.engines.torch_engine import TorchEngine
    from service.frames.selection import create_frame_path

    captured = _Captured()
    logger = logging.getLogger("service")
    logger.addHandler(captured)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for name in bench.args.models:
            captured.messages.clear()
            if name == bench.args.model:
                engine = bench.engine()
            else:
                sizes = tuple(bench.args.server_batches)
                engine = TorchEngine(model_spec(name), bench.model_path(name), bench.device,
                                     sizes, batches_at_once=3)  # fmt: skip
                engine.warm_up()
            path = create_frame_path(engine, bench.codec(), bench.workers())
            eager = [size for size in engine.batch_sizes if size not in engine.graph_sizes]
            bench.out.line(
                f"{name}: {type(path).__name__}, {engine.precision} on {engine.device}; CUDA "
                f"graphs for batch sizes {list(engine.graph_sizes)}, eager for {eager}"
            )
            for message in captured.messages:
                bench.out.line(f"  log: {message}")
            bench.out.record("frame_path", model=name, path=type(path).__name__,
                             precision=engine.precision, graphs=list(engine.graph_sizes),
                             eager=eager, log=list(captured.messages))  # fmt: skip
    finally:
        logger.removeHandler(captured)
        logger.setLevel(previous_level)
    bench.out.line(f"float32 flags as serving runs: {_fp32_flags()}")


def graphs(bench: Bench) -> None:
    """Each batch size's graph against the module run eagerly, and three engine threads at
    once against one."""
    import torch

    from service.engines.torch_engine import photo_check_frames

    engine = bench.engine()
    photos = torch.from_numpy(photo_check_frames(bench.spec)).to(bench.device)
    module = engine._module
    for size in engine.batch_sizes:
        frames = photos[torch.arange(size, device=photos.device) % len(photos)].contiguous()
        with torch.inference_mode():
            eager = module(frames)
            graphed = engine.infer_on_device(frames)
            timings = {}
            runs = {"graph": engine.infer_on_device, "eager": module}
            for what, run in runs.items():
                torch.cuda.synchronize(bench.device)
                started = time.perf_counter()
                for _ in range(20):
                    run(frames)
                torch.cuda.synchronize(bench.device)
                timings[what] = (time.perf_counter() - started) * 1e3 / 20
        difference = float((graphed - eager).abs().max())
        kind = "graph" if size in engine.graph_sizes else "EAGER (capture failed)"
        bench.out.line(f"batch {size:>3} ({kind}): {timings['graph']:.3f} ms against eager "
                       f"{timings['eager']:.3f} ms, max difference {difference:.2e}")  # fmt: skip
        bench.out.record("graphs", batch=size, graph_ms=timings["graph"],
                         eager_ms=timings["eager"], max_difference=difference)  # fmt: skip
    size = engine.batch_sizes[-1]
    frames = photos[torch.arange(size, device=photos.device) % len(photos)].contiguous()

    def frames_per_s(threads: int, runs: int = 30) -> float:
        def work(_: int) -> None:
            with torch.cuda.stream(torch.cuda.Stream(bench.device)), torch.inference_mode():
                for _ in range(runs):
                    engine.infer_on_device(frames)
                torch.cuda.current_stream().synchronize()

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        return threads * runs * size / (time.perf_counter() - started)

    one, three = frames_per_s(1), frames_per_s(3)
    bench.out.line(f"batch {size}: one thread {one:.0f} frames/s, three at once {three:.0f} "
                   f"frames/s ({three / one:.2f}x)")  # fmt: skip
    bench.out.record("graph_threads", batch=size, one=one, three=three)


def memory(bench: Bench) -> None:
    """Device memory after warm-up and after 200 batches of masks and composites."""
    import torch

    from loadtest.frames import video_sequence
    from service.frames.codec import MaskEncoding
    from service.frames.path import FrameJob
    from service.frames.refine import Background
    from service.frames.requests import OutputRequest

    gpu = bench.gpu_path()

    def figures() -> tuple[float, float]:
        torch.cuda.synchronize(bench.device)
        return (torch.cuda.memory_allocated(bench.device) / 2**20,
                torch.cuda.memory_reserved(bench.device) / 2**20)  # fmt: skip

    frames = video_sequence(*size_of(bench.args.resolutions[0]), frames=8)
    jobs = composite_jobs(frames[:4], Background(blur_radius=12.0))
    jobs += [FrameJob(jpeg, OutputRequest(0, 0, MaskEncoding.JPEG)) for jpeg in frames[4:]]
    through(gpu, jobs)
    before = figures()
    for _ in range(200):
        through(gpu, jobs)
    after = figures()
    bench.out.line(f"after warm-up: {before[0]:.0f} MiB allocated, {before[1]:.0f} MiB "
                   f"reserved; after 200 batches of 8: {after[0]:.0f} MiB allocated, "
                   f"{after[1]:.0f} MiB reserved")  # fmt: skip
    bench.out.record("memory", before=before, after=after)
    if after[0] > before[0] * 1.2 + 64:
        raise CheckFailed(f"allocated memory grew from {before[0]:.0f} to {after[0]:.0f} MiB")
