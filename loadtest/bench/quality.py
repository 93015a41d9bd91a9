"""Mask quality figures for `make bench`: flicker with and without temporal smoothing, and the
cost per frame of each output option at 640x480 and 1280x720 (one codec thread)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.frames import video_sequence
from models.fetch import ensure_model_files
from models.registry import model_spec
from service.config import ServiceConfig
from service.engines.tflite import TFLiteEngine
from service.frames.codec import JpegCodec, MaskEncoding
from service.frames.refine import Background, TemporalSmoother, composite, guided_upscale
from service.timing import median_ms


def _noisy_still_frames(width: int, height: int, count: int, sigma: float) -> list[bytes]:
    codec = JpegCodec(1 << 24, 1 << 26)
    still = codec.decode_image(video_sequence(width, height, frames=1)[0])
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        noisy = np.clip(still + rng.normal(0.0, sigma, still.shape), 0, 255).astype(np.uint8)
        frames.append(codec.encode_rgb(noisy, 85))
    return frames


@dataclass(frozen=True)
class QualityFigures:
    flicker: dict[float, float]  # by smoothing strength: mean |mask change| a frame, in [0, 1]
    step_ms: dict[str, tuple[float, float]]  # by step: ms a frame at 640x480 and at 1280x720


def measure_quality(config: ServiceConfig) -> QualityFigures:
    """Flicker by smoothing strength on a still scene with camera noise, and the cost of each
    step an answer may take."""
    spec = model_spec(config.default_model)
    path = ensure_model_files([spec], Path(config.model_dir), config.fetch_models)[spec.name]
    engine = TFLiteEngine(spec, path, config.engine_threads)
    codec = JpegCodec(config.max_frame_bytes, config.max_frame_pixels)

    frames = _noisy_still_frames(640, 480, count=30, sigma=6.0)
    alphas = [
        engine.infer(codec.decode_for_model(j, spec.input_width, spec.input_height).pixels[None])[0]
        for j in frames
    ]
    flicker = {}
    for strength in (0.0, 0.5, 0.8):
        smoother = TemporalSmoother(strength) if strength else None
        masks = [
            (smoother(alpha, sequence) if smoother else alpha) * 255
            for sequence, alpha in enumerate(alphas)
        ]
        change = np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(masks)])
        flicker[strength] = float(change / 255)
    small, large = (_step_costs(codec, engine, size) for size in ((640, 480), (1280, 720)))
    return QualityFigures(flicker, {name: (cost, large[name]) for name, cost in small.items()})


def bench_quality(config: ServiceConfig) -> None:
    figures = measure_quality(config)
    print("\nflicker: mean |mask change| per frame on a still scene with camera noise (sigma 6)")
    for strength, change in figures.flicker.items():
        print(f"  smoothing {strength:.1f}: {change:.5f}")
    print("\ncost per frame of each step, ms, median of 30 (one thread):")
    print(f"  {'step':<34}{'640x480':>10}{'1280x720':>10}")
    for name, (small, large) in figures.step_ms.items():
        print(f"  {name:<34}{small:10.2f}{large:10.2f}")


def _step_costs(codec: JpegCodec, engine: TFLiteEngine, size: tuple[int, int]) -> dict[str, float]:
    spec = engine.spec
    width, height = size
    jpeg = _noisy_still_frames(width, height, count=1, sigma=0.0)[0]
    decoded = codec.decode_for_model(jpeg, spec.input_width, spec.input_height, (0, 0))
    alpha = engine.infer(decoded.pixels[None])[0]
    smoother = TemporalSmoother(0.8)
    sequences = itertools.count()
    smoother(alpha, next(sequences))
    frame = decoded.frame
    full_alpha = guided_upscale(alpha, decoded.pixels, frame)
    steps = {
        "mask, bilinear, raw": lambda: codec.encode_mask(alpha, width, height, MaskEncoding.RAW_U8),
        "temporal smoothing (model size)": lambda: smoother(alpha, next(sequences)),
        "decode at output size": lambda: codec.decode_for_model(
            jpeg, spec.input_width, spec.input_height, (0, 0)
        ),
        "edge-aware (guided) upscale": lambda: guided_upscale(alpha, decoded.pixels, frame),
        "composite, blur 12 px, + JPEG": lambda: codec.encode_rgb(
            composite(frame, full_alpha, Background(blur_radius=12)), 85
        ),
        "composite, colour, + JPEG": lambda: codec.encode_rgb(
            composite(frame, full_alpha, Background(color=(0, 177, 64))), 85
        ),
    }
    return {name: median_ms(step, runs=30) for name, step in steps.items()}
