"""Moving video sequences cut from real photos of people, JPEG-encoded once before a run.

A window pans and zooms over the photo, so that every frame differs (no cache or encoder
shortcut can make the load lighter than a real camera's), at the call's resolution.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def _photos() -> list[Image.Image]:
    from models.verify import astronaut, grace_hopper

    return [Image.fromarray(astronaut()), Image.fromarray(grace_hopper())]


def video_sequence(width: int, height: int, frames: int, photo: int = 0) -> list[bytes]:
    """`frames` JPEG frames of width x height: a window panning and zooming over a photo."""
    source = _photos()[photo % 2]
    aspect = width / height
    jpegs = []
    for n in range(frames):
        phase = 2 * math.pi * n / max(frames, 1)
        zoom = 0.75 + 0.2 * math.sin(phase)  # the window covers 55% to 95% of the photo
        window_width = min(source.width, source.height * aspect) * zoom
        window_height = window_width / aspect
        left = (source.width - window_width) * (0.5 + 0.5 * math.sin(phase * 2))
        top = (source.height - window_height) * (0.5 + 0.5 * math.cos(phase))
        box = (left, top, left + window_width, top + window_height)
        frame = source.resize((width, height), Image.BILINEAR, box=box)
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=85)
        jpegs.append(buffer.getvalue())
    return jpegs


def mean_frame_kilobytes(jpegs: list[bytes]) -> float:
    return float(np.mean([len(jpeg) for jpeg in jpegs])) / 1e3
