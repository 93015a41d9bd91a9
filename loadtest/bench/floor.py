"""The floor: the CPU time of each step a frame needs, each measured alone on one core in its
cheapest configuration, with the libraries the service uses. What a server spends per frame
beyond the sum of these is the cost of serving.

Run as `python -m loadtest.bench.floor` (it pins itself to one core and prints JSON), or
through `make bench`, which runs it in a process of its own so that the pinning stays there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np
from turbojpeg import TJPF_GRAY, TJPF_RGB, TJSAMP_GRAY, TurboJPEG

from loadtest.frames import video_sequence
from models.fetch import default_model_dir, ensure_model_files
from models.registry import model_spec
from service.engines.tflite import TFLiteEngine
from service.frames.codec import dct_scale_for, to_bytes
from service.frames.resize import resize

STEPS = ("decode", "resize", "inference", "upscale", "encode")
BATCH_SIZES = TFLiteEngine.CANDIDATE_SIZES  # each as one run of the model
_MASK_JPEG_QUALITY = 90  # as the service encodes masks


def cpu_ms(step: Callable[[], object], samples: int = 15, repeats: int = 10) -> float:
    """Median over `samples` of the mean thread CPU time of `repeats` calls, in ms."""
    step()
    times = []
    for _ in range(samples):
        started = time.thread_time()
        for _ in range(repeats):
            step()
        times.append((time.thread_time() - started) / repeats)
    return float(np.median(times)) * 1e3


def floor_ms(width: int, height: int, model: str = "selfie-general") -> dict[str, float]:
    """CPU-ms of each step for one width x height frame, and their sum (`total`)."""
    spec = model_spec(model)
    path = ensure_model_files([spec], default_model_dir(), fetch=True)[spec.name]
    turbo = TurboJPEG()
    jpeg = video_sequence(width, height, frames=2)[0]
    factor = dct_scale_for(width, height, spec.input_width, spec.input_height)
    decoded = turbo.decode(jpeg, pixel_format=TJPF_RGB, scaling_factor=factor)
    pixels = resize(decoded, spec.input_width, spec.input_height)
    engine = TFLiteEngine(spec, path, num_threads=1)
    by_batch = {}
    for batch in BATCH_SIZES:
        frames = np.repeat(pixels[None], batch, axis=0)
        by_batch[batch] = cpu_ms(lambda f=frames: engine.infer(f), samples=7, repeats=2) / batch
    alpha = engine.infer(pixels[None])[0]
    mask = resize(to_bytes(alpha), width, height)
    steps = {
        "decode": cpu_ms(lambda: turbo.decode(jpeg, pixel_format=TJPF_RGB, scaling_factor=factor)),
        "resize": cpu_ms(lambda: resize(decoded, spec.input_width, spec.input_height)),
        "inference": min(by_batch.values()),
        "upscale": cpu_ms(lambda: resize(to_bytes(alpha), width, height)),
        "encode": cpu_ms(
            lambda: turbo.encode(
                mask[:, :, None],
                quality=_MASK_JPEG_QUALITY,
                pixel_format=TJPF_GRAY,
                jpeg_subsample=TJSAMP_GRAY,
            )
        ),
    }
    steps["total"] = sum(steps[step] for step in STEPS)
    steps["inference_batch"] = float(min(by_batch, key=by_batch.__getitem__))
    for batch, ms in by_batch.items():
        steps[f"inference_b{batch}"] = ms
    return steps


def format_floor(width: int, height: int, floor: dict[str, float]) -> str:
    parts = ", ".join(f"{step} {floor[step]:.2f}" for step in STEPS)
    batches = " ".join(f"b{b} {floor[f'inference_b{b}']:.2f}" for b in BATCH_SIZES)
    return (
        f"floor {width}x{height}: {floor['total']:.2f} CPU-ms/frame ({parts}; inference per "
        f"frame by batch: {batches})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.floor", description=__doc__)
    parser.add_argument("--resolutions", default="640x480,1280x720")
    parser.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)))
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    results = {}
    for resolution in args.resolutions.split(","):
        width, height = (int(part) for part in resolution.split("x"))
        results[resolution] = floor_ms(width, height)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
