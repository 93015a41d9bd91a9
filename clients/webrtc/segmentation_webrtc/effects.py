"""The backgrounds a caller can pick, as the service's Composite options."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from segmentation.v1 import segmentation_pb2 as pb

EFFECTS = ("blur", "green", "beach")


def _beach_jpeg() -> bytes:
    """A generated picture (sky, sea, sand), so the demo needs no image files."""
    height, width = 480, 640
    rows = np.linspace(0.0, 1.0, height)[:, None]
    sky = np.array([120, 180, 240]) * (1 - rows) + np.array([200, 230, 255]) * rows
    image = np.repeat(sky[:, None, :], width, axis=1)
    image[int(height * 0.55) :] = [40, 110, 170]  # sea
    image[int(height * 0.75) :] = [230, 210, 160]  # sand
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def composite_for(effect: str) -> pb.Composite:
    if effect == "blur":
        return pb.Composite(blur_radius=18, jpeg_quality=85)
    if effect == "green":
        return pb.Composite(color_rgb=0x00B140, jpeg_quality=85)
    if effect == "beach":
        return pb.Composite(image_jpeg=_beach_jpeg(), jpeg_quality=85)
    raise ValueError(f"unknown effect {effect!r}; choose one of {EFFECTS}")
