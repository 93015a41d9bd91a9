"""Real photos of people that installed packages ship, as JPEG bytes."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data


def encode_jpeg(rgb: np.ndarray, quality: int = 90, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, **options)
    return buffer.getvalue()


@cache
def astronaut_rgb() -> np.ndarray:
    """Eileen Collins, 512x512 (scikit-image)."""
    return data.astronaut()


@cache
def grace_hopper_rgb() -> np.ndarray:
    """Grace Hopper's portrait, 512x600 (matplotlib's sample data)."""
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        return np.asarray(Image.open(file).convert("RGB"))


def astronaut_jpeg() -> bytes:
    return encode_jpeg(astronaut_rgb())


def grace_hopper_jpeg() -> bytes:
    return encode_jpeg(grace_hopper_rgb())


def video_frame_jpeg(width: int = 640, height: int = 480, shift: int = 0) -> bytes:
    """A video-sized frame: the astronaut photo stretched to width x height, panned by `shift`."""
    frame = Image.fromarray(np.roll(astronaut_rgb(), shift, axis=1)).resize((width, height))
    return encode_jpeg(np.asarray(frame))


def runaway_scans_jpeg() -> bytes:
    """A progressive JPEG of a real photo whose last scan repeats 600 times: libjpeg-turbo
    would decode every one of them unless scans are limited."""
    jpeg = encode_jpeg(astronaut_rgb()[:64, :64], progressive=True)
    last_scan = jpeg.rfind(b"\xff\xda")
    end = jpeg.rfind(b"\xff\xd9")
    return jpeg[:end] + jpeg[last_scan:end] * 600 + jpeg[end:]


def cmyk_jpeg() -> bytes:
    """The astronaut as a CMYK JPEG (Adobe's layout, as print workflows write it)."""
    buffer = io.BytesIO()
    Image.fromarray(astronaut_rgb()).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()
