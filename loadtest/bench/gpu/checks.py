"""The GPU benchmark's self-checks, run before its long load sections: is the device's work
right (decode, damaged frames, graphs, memory; the composites' in `composites`), and what
ran (versions, paths, precisions)? Each is a section of `run.py`; on a CPU they run through
`CpuFrameDevice`, and those that need CUDA are skipped."""

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


def decode_accuracy(bench: Bench) -> None:
    """A batch of distinct frames decoded on the device against libjpeg-turbo."""
    import torch
    from turbojpeg import TJPF_RGB

    from loadtest.frames import video_sequence
    from service.frames.codec import strict_turbojpeg

    each = bench.args.decode_frames // len(bench.args.resolutions)
    jpegs = [jpeg for resolution in bench.args.resolutions
             for jpeg in video_sequence(*size_of(resolution), frames=each)]  # fmt: skip
    device, turbo = bench.frame_device(), strict_turbojpeg()
    with device.stream(), torch.inference_mode():
        decoded = [image.permute(1, 2, 0).cpu().numpy() for image in device.decode(jpegs)]
    worst_mean = 0.0
    for resolution in bench.args.resolutions:
        width, height = size_of(resolution)
        diffs = []
        for jpeg, image in zip(jpegs, decoded, strict=True):
            if image.shape[:2] == (height, width):
                reference = turbo.decode(jpeg, pixel_format=TJPF_RGB)
                diffs.append(np.abs(image.astype(np.int16) - reference.astype(np.int16)))
        means = [float(d.mean()) for d in diffs]
        maxes = [int(d.max()) for d in diffs]
        worst_mean = max(worst_mean, *means)
        bench.out.line(f"{resolution}, {len(diffs)} frames in one batch of {len(jpegs)}: max "
                       f"difference per frame {maxes}; mean per frame worst {max(means):.3f}, "
                       f"overall {np.mean(means):.3f} (levels of 255)")  # fmt: skip
        bench.out.record("decode_accuracy", resolution=resolution, max=maxes, mean=means)
    if worst_mean > 3.0:
        raise CheckFailed(f"a frame decodes {worst_mean:.2f} levels off libjpeg-turbo on average")


def _damaged(jpeg: bytes, progressive: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    kinds = {f"truncated to {n}%": jpeg[: len(jpeg) * n // 100] for n in (30, 60, 90, 99)}
    kinds["end-of-image cut"] = jpeg[:-2]
    for _ in range(4):
        flipped = bytearray(jpeg)
        position = int(rng.integers(len(jpeg) // 4, len(jpeg) - 2))
        flipped[position] ^= 1 << int(rng.integers(8))
        kinds[f"bit flipped at {position}"] = bytes(flipped)
    kinds["zeros after 40%"] = jpeg[: len(jpeg) * 2 // 5] + bytes(len(jpeg) * 3 // 5)
    zeroed = bytearray(jpeg)
    zeroed[len(jpeg) * 2 // 5 : len(jpeg) // 2] = bytes(len(jpeg) // 2 - len(jpeg) * 2 // 5)
    kinds["zeroed 40-50%, end kept"] = bytes(zeroed)
    kinds["progressive (valid)"] = progressive
    kinds["progressive truncated to 60%"] = progressive[: len(progressive) * 3 // 5]
    return kinds


def damaged_frames(bench: Bench) -> None:
    """Each kind of damage alone and between two good frames, through both paths: does the GPU
    path answer as the CPU path does, do the good frames survive, does the device still
    synchronise?"""
    import io

    from PIL import Image

    from loadtest.frames import video_sequence
    from service.errors import FrameError
    from service.frames.codec import MaskEncoding
    from service.frames.path import FrameJob
    from service.frames.requests import OutputRequest

    gpu, cpu, device = bench.gpu_path(), bench.cpu_path(), bench.frame_device()
    good = video_sequence(*size_of(bench.args.resolutions[0]), frames=2)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(good[0])).save(buffer, format="JPEG", quality=85, progressive=True)
    request = OutputRequest(0, 0, MaskEncoding.RAW_U8)
    agreed, decoded_as_fine, problems = 0, [], []
    kinds = _damaged(good[0], buffer.getvalue())
    for what, data in kinds.items():
        (cpu_answer,), _ = through(cpu, [FrameJob(data, request)])
        (alone,), _ = through(gpu, [FrameJob(data, request)])
        beside, _ = through(gpu, [FrameJob(j, request) for j in (good[0], data, good[1])])
        try:
            device.check()
            synchronised = "synchronises"
        except Exception as error:
            synchronised = f"does NOT synchronise ({error})"
            problems.append(f"{what}: device {synchronised}")
        cpu_rejects = isinstance(cpu_answer, FrameError)
        gpu_rejects = isinstance(alone, FrameError)
        good_kept = not isinstance(beside[0], FrameError) and not isinstance(beside[2], FrameError)
        same_beside = isinstance(beside[1], FrameError) == gpu_rejects
        agreed += cpu_rejects == gpu_rejects
        if cpu_rejects and not gpu_rejects:
            decoded_as_fine.append(what)
        if not good_kept or not same_beside:
            problems.append(f"{what}: between good frames, good kept {good_kept}, "
                            f"answered as alone {same_beside}")  # fmt: skip
        verdict = lambda rejects: "rejects" if rejects else "decodes"  # noqa: E731
        bench.out.line(f"  {what:<30} CPU path {verdict(cpu_rejects)}, GPU path "
                       f"{verdict(gpu_rejects)}; beside good frames: good ones "
                       f"{'kept' if good_kept else 'LOST'}; device {synchronised}")  # fmt: skip
        bench.out.record("damaged", what=what, cpu_rejects=cpu_rejects, gpu_rejects=gpu_rejects,
                         good_kept=good_kept, synchronised=synchronised)  # fmt: skip
    bench.out.line(f"the GPU path answers as the CPU path on {agreed} of {len(kinds)}; "
                   f"decoded on the device where the CPU path rejects: "
                   f"{decoded_as_fine or 'none'}")  # fmt: skip
    caught = [what for what in decoded_as_fine if "flipped" not in what]
    if problems or caught:
        raise CheckFailed("; ".join(problems + [f"{w}: decoded, not caught" for w in caught]))


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
