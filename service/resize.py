"""Image resizing, in one place: OpenCV's SIMD bilinear filter, antialiased where it shrinks.

Bilinear interpolation reads two pixels per output pixel along each axis: shrinking by more
than 1.5x weighs the source pixels very unevenly (beyond 2x it skips some) and aliases, so
there the area filter (the mean of the pixels each output pixel covers) is used instead.
Enlarging and mild shrinking stay bilinear, a few hundred microseconds at video sizes against
about 1 ms for Pillow's antialiased bilinear filter. Measured on the selfie models against a
full decode stretched by Pillow: bilinear at 1.67x shrinking lost 1.6% IoU, area 0.9%.
"""

from __future__ import annotations

import cv2
import numpy as np

cv2.setNumThreads(1)  # callers run on their own threads; OpenCV's pool would oversubscribe

_ALIASING_RATIO = 1.5


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` (H, W) or (H, W, C), uint8 or float32, at width x height; the same array when
    it already has that size."""
    source_height, source_width = image.shape[:2]
    if (source_width, source_height) == (width, height):
        return image
    shrinks_a_lot = (
        source_width > _ALIASING_RATIO * width or source_height > _ALIASING_RATIO * height
    )
    interpolation = cv2.INTER_AREA if shrinks_a_lot else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
