"""Image resizing, in one place: OpenCV's SIMD bilinear filter, antialiased where it shrinks.

Bilinear interpolation reads two pixels per output pixel along each axis: shrinking by more
than 1.5x weighs the source pixels very unevenly (beyond 2x it skips some) and aliases. A
shrink of 2.5x or more therefore halves first, as a mipmap does: bilinear sampling at exactly
half the size weighs each pair of pixels equally, a 2-pixel box filter, so each halving is
antialiased and costs what any bilinear resize costs. What is left, under 2.5x, is bilinear, or
OpenCV's area filter (the mean of the pixels each output pixel covers) above 1.5x. The area
filter alone does it all in one step, but at a ratio that is no whole number it takes a slow
general path (several times the halvings' cost: `make bench`'s floor shows the step); Pillow's
antialiased bilinear is slower still.
"""

from __future__ import annotations

import cv2
import numpy as np

cv2.setNumThreads(1)  # callers run on their own threads; OpenCV's pool would oversubscribe

_ALIASING_RATIO = 1.5
# Halving leaves about 1.25x or more to the last step: a box filter that ends close to the target
# size weighs pixels differently enough from the ideal antialiased stretch to move a mask
# (IoU 0.984 at 2.08x on the landscape model, where the area filter keeps 0.99).
_HALVING_RATIO = 2.5


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` (H, W) or (H, W, C), uint8 or float32, at width x height; the same array when
    it already has that size."""
    source_width, source_height = image.shape[1], image.shape[0]
    while source_width >= _HALVING_RATIO * width or source_height >= _HALVING_RATIO * height:
        if source_width >= _HALVING_RATIO * width:
            source_width //= 2
        if source_height >= _HALVING_RATIO * height:
            source_height //= 2
        image = cv2.resize(image, (source_width, source_height), interpolation=cv2.INTER_LINEAR)
    if (source_width, source_height) == (width, height):
        return image
    shrinks_a_lot = (
        source_width > _ALIASING_RATIO * width or source_height > _ALIASING_RATIO * height
    )
    interpolation = cv2.INTER_AREA if shrinks_a_lot else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
