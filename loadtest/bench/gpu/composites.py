"""The GPU benchmark's composite self-checks: the GPU path's composites against references
made on the CPU from the same masks, with three engine threads encoding at once (`encode-race`)
and at batch 1 and 8 (`composites`). A composite encoded before its kernels wrote it does not
decode, or does not match its reference."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from loadtest.bench.gpu.bench import Bench, size_of, through
from loadtest.bench.gpu.run import CheckFailed
from service.frames.gpu_device import CudaFrameDevice


def composite_jobs(jpegs: list[bytes], background: Any, quality: int = 90) -> list:
    from service.frames.codec import MaskEncoding
    from service.frames.path import FrameJob
    from service.frames.requests import CompositeRequest, OutputRequest

    request = OutputRequest(0, 0, MaskEncoding.RAW_U8,
                            composite=CompositeRequest(background, quality))  # fmt: skip
    return [FrameJob(jpeg, request) for jpeg in jpegs]


def _pixels(jpeg: bytes) -> np.ndarray:
    from turbojpeg import TJPF_RGB

    from service.frames.codec import strict_turbojpeg

    return strict_turbojpeg().decode(jpeg, pixel_format=TJPF_RGB).astype(np.float32)


def _mean_differences(answers: list, references: list[np.ndarray]) -> list[float]:
    """Each composite's pixels against its reference, in mean levels; inf where one did not
    come back or does not decode."""
    differences = []
    for answer, reference in zip(answers, references, strict=True):
        try:
            differences.append(float(np.abs(_pixels(answer[1].jpeg) - reference).mean()))
        except Exception:
            differences.append(float("inf"))
    return differences


def _references(gpu: Any, jobs: list) -> list[np.ndarray]:
    """What each job's composite must show: the GPU path's own mask, composited on the CPU
    (OpenCV) over the frame as libjpeg-turbo decodes it. Unlike the CPU path's composite it
    shares the GPU path's mask, so only the compositing and its encode are compared."""
    import dataclasses

    from service.frames.codec import MaskEncoding
    from service.frames.refine import composite

    masks = [dataclasses.replace(job, request=dataclasses.replace(
        job.request, composite=None, encoding=MaskEncoding.RAW_U8)) for job in jobs]  # fmt: skip
    answers, _ = through(gpu, masks)
    references = []
    for job, (mask, _) in zip(jobs, answers, strict=True):
        alpha = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width) / 255.0
        frame = _pixels(job.jpeg).astype(np.uint8)
        image = composite(frame, alpha.astype(np.float32), job.request.composite.background)
        references.append(image.astype(np.float32))
    return references


def encode_race(bench: Bench) -> None:
    """Three engine threads compositing and encoding at once, each with its model and
    composite kernels queued on its own stream: composites that do not decode, or do not match
    their reference (`_references`), were encoded before they were written."""
    from loadtest.frames import video_sequence
    from service.frames.refine import Background

    gpu = bench.gpu_path()
    batch, rounds, threads = bench.args.race_batch, bench.args.race_rounds, 3
    frames = video_sequence(*size_of(bench.args.resolutions[0]), frames=batch * rounds * threads)
    jobs = composite_jobs(frames, Background(color=(0, 255, 0)))
    references = _references(gpu, jobs)
    differences = _race(gpu, jobs, references, batch, rounds, threads)
    bad = _report(bench, "encode_race", differences,
                  f"{threads} threads x {rounds} rounds x batch {batch}")  # fmt: skip
    if bench.cuda and bench.args.race_control:
        # The control: the same without the ordering, to show that the check sees the race.
        # Opt-in: an unordered encode may also scribble on memory freed under it.
        from service.frames.gpu_path import GpuFramePath

        unordered = GpuFramePath(gpu.engine, bench.codec(), bench.workers(),
                                 _UnorderedEncode(bench.device))  # fmt: skip
        control = _race(unordered, jobs, references, batch, rounds, threads)
        _report(bench, "encode_race_control", control,
                "control, nvJPEG's encode with no synchronisation around it (none bad here "
                "only means the race did not show this time)")  # fmt: skip
    if bad:
        raise CheckFailed(f"{len(bad)} composites read before they were written")


def composites(bench: Bench) -> None:
    """The GPU path's composites against the CPU path's (their masks differ a little: each
    path decodes and stretches its own way), and against their references (the same mask,
    composited on the CPU): the second shows the device's compositing and encode alone."""
    from loadtest.frames import video_sequence
    from service.frames.refine import Background

    gpu, cpu = bench.gpu_path(), bench.cpu_path()
    worst = 0.0
    for batch in bench.args.composite_batches:
        frames = video_sequence(*size_of(bench.args.resolutions[0]), frames=batch)
        for what, background in (("colour", Background(color=(0, 255, 0))),
                                 ("blur 12", Background(blur_radius=12.0))):  # fmt: skip
            jobs = composite_jobs(frames, background)
            answers, _ = through(gpu, jobs)
            cpu_images = [_pixels(image.jpeg) for _, image in through(cpu, jobs)[0]]
            against_cpu = _mean_differences(answers, cpu_images)
            against_reference = _mean_differences(answers, _references(gpu, jobs))
            worst = max(worst, *against_reference)
            bench.out.line(f"batch {batch}, {what}: mean difference from the CPU path's "
                           f"{np.mean(against_cpu):.2f} levels (worst frame "
                           f"{max(against_cpu):.2f}); from the references "
                           f"{np.mean(against_reference):.2f} (worst "
                           f"{max(against_reference):.2f})")  # fmt: skip
            bench.out.record("composites", batch=batch, background=what, against_cpu=against_cpu,
                             against_reference=against_reference)  # fmt: skip
    if worst > 4.0:
        raise CheckFailed(f"a composite is {worst:.2f} levels off its reference on average")


def _report(bench: Bench, kind: str, differences: list[float], what: str) -> list[float]:
    """Prints and records how many composites went wrong; returns their differences."""
    bad = [d for d in differences if not d < 6.0]  # a JPEG at quality 90 is 1-2 levels off
    bench.out.line(f"{what}: {len(bad)} of {len(differences)} composites do not decode or do "
                   f"not match (mean difference from their references: worst "
                   f"{max(differences):.2f}, mean {np.mean(differences):.2f} levels)")  # fmt: skip
    bench.out.record(kind, frames=len(differences), bad=len(bad), worst=max(differences))
    return bad


def _race(gpu: Any, jobs: list, references: list, batch: int, rounds: int, threads: int) -> list:
    """Each composite's mean difference from its reference, `threads` threads at once, each
    batch on the thread's own stream."""
    start = threading.Barrier(threads)

    def worker(thread: int) -> list[float]:
        start.wait()
        differences = []
        for r in range(rounds):
            first = (r * threads + thread) * batch
            answers, _ = through(gpu, jobs[first : first + batch])
            differences += _mean_differences(answers, references[first : first + batch])
        return differences

    with ThreadPoolExecutor(threads) as pool:
        return [d for part in pool.map(worker, range(threads)) for d in part]


class _UnorderedEncode(CudaFrameDevice):
    """nvJPEG's encode as the frame path called it before it was ordered: on the engine
    thread's stream, with the model and composite kernels still queued there."""

    def encode_jpeg(self, images: list, quality: int) -> list[bytes]:
        from torchvision.io import encode_jpeg

        return [data.cpu().numpy().tobytes() for data in encode_jpeg(images, quality=quality)]
