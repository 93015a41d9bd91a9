"""The GPU benchmark's checks of decoding on the device, run before its long load sections:
good frames against libjpeg-turbo, and damaged frames (truncated, bit-flipped, zeroed,
progressive) through both paths, alone and between good ones. Each is a section of `run.py`;
on a CPU they run through `CpuFrameDevice`."""

from __future__ import annotations

import numpy as np

from loadtest.bench.gpu.bench import Bench, size_of, through
from loadtest.bench.gpu.run import CheckFailed


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
