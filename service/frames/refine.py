"""What happens to a model's alpha before it leaves: temporal smoothing, edge-aware upscaling
and compositing, in numpy and OpenCV, run on the codec threads.

- `TemporalSmoother`: per stream, mixes the new alpha with the previous one, more where the new
  one is uncertain (near 0.5) and not at all where it is sure, so a still person stops
  flickering while a moving one keeps up.
- `guided_upscale`: the fast guided filter (He and Sun, 2015): a local linear model of the
  alpha in terms of the frame's luminance, fitted at the model's resolution and applied at the
  output's, so that mask edges follow the image's edges instead of the blocky low-res grid.
- `composite`: the frame over a blurred, coloured or replaced background.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from service.frames.resize import resize

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class TemporalSmoother:
    """One stream's smoothing state: the previous alpha at the model's resolution.

    `strength` in (0, 1] is how much of the previous alpha a fully uncertain pixel keeps.
    Frames of one stream may finish on two codec threads at once, and not always in order: a
    lock serialises them, and a frame older than the last one stored (by its `sequence`) is
    smoothed but does not become the previous alpha.
    """

    def __init__(self, strength: float) -> None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"smoothing strength must be in (0, 1]; was {strength}")
        self.strength = strength
        self._previous: np.ndarray | None = None
        self._previous_sequence = -1
        self._lock = threading.Lock()

    def __call__(self, alpha: np.ndarray, sequence: int) -> np.ndarray:
        return self.step(alpha, sequence, self.blend)

    def blend(self, previous: Any, alpha: Any, log2: Callable[[Any], Any] = np.log2) -> Any:
        """The previous alpha mixed into the new one, numpy arrays or torch tensors alike
        (`log2=torch.log2` for tensors): the one home of the formula for both paths."""
        weight = uncertainty(alpha, log2) * self.strength
        return alpha + (previous - alpha) * weight

    def step(
        self,
        alpha: Any,
        sequence: int,
        blend: Callable[[Any, Any], Any],
        settle: Callable[[], None] | None = None,
    ) -> Any:
        """One frame's smoothing with `blend(previous, alpha)` over any array type (the GPU
        path's tensors): the state, the order and the lock are kept here either way. `settle`
        runs under the lock before the result becomes the previous alpha: on a GPU it waits
        for the kernels that wrote it, so that another engine thread's stream never reads it
        half-written."""
        with self._lock:
            previous = self._previous
            if (
                previous is None
                or type(previous) is not type(alpha)
                or tuple(previous.shape) != tuple(alpha.shape)
            ):
                smoothed = alpha
            else:
                smoothed = blend(previous, alpha)
            if sequence > self._previous_sequence:
                if settle is not None:
                    settle()
                self._previous = smoothed
                self._previous_sequence = sequence
            return smoothed


def uncertainty(alpha: Any, log2: Callable[[Any], Any] = np.log2) -> Any:
    """1 where the model is unsure (alpha 0.5), falling to 0 where it is sure (0 or 1), in
    alpha's own type and precision (float32 numpy arrays stay float32).

    1 - (1 - H(p))^2 with H the binary entropy in bits: squaring keeps sure pixels sharp.
    """
    p = alpha.clip(1e-6, 1 - 1e-6)
    entropy = -(p * log2(p) + (1 - p) * log2(1 - p))
    return 1.0 - (1.0 - entropy) ** 2


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window; borders reflect (edge pixel repeated, as scipy's
    "reflect")."""
    size = 2 * radius + 1
    return cv2.boxFilter(
        image.astype(np.float32), -1, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT
    )


def luminance(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ _LUMA) / 255.0


def guided_upscale(
    alpha: np.ndarray,
    guide_small: np.ndarray,
    guide_full: np.ndarray,
    radius: int = 2,
    eps: float = 1e-3,
    subsample: int = 2,
) -> np.ndarray:
    """Upscales `alpha` (model resolution) to `guide_full`'s size, edges following the guide.

    `guide_small`: the frame's RGB at alpha's resolution (what the model saw);
    `guide_full`: the frame's RGB at the output size. The linear model is fitted at
    1/`subsample` of the model's resolution (its coefficients vary slowly, so this loses
    little and saves most of the cost). Returns float32 alpha in [0, 1].
    """
    fit_height, fit_width = alpha.shape[0] // subsample, alpha.shape[1] // subsample
    small = resize(luminance(guide_small), fit_width, fit_height)
    alpha = resize(alpha.astype(np.float32), fit_width, fit_height)
    mean_i = box_mean(small, radius)
    mean_p = box_mean(alpha, radius)
    covariance = box_mean(small * alpha, radius) - mean_i * mean_p
    variance = box_mean(small * small, radius) - mean_i * mean_i
    a = covariance / (variance + np.float32(eps))
    b = mean_p - a * mean_i
    a, b = box_mean(a, radius), box_mean(b, radius)
    height, width = guide_full.shape[:2]
    full = luminance(guide_full)
    result = resize(a, width, height) * full + resize(b, width, height)
    return np.clip(result, 0.0, 1.0)


# The blur behind the person: a copy this many times smaller each way is blurred and scaled
# back, the same look at a sixteenth of the cost.
BLUR_DOWNSCALE = 4


@dataclass(frozen=True)
class Background:
    """What replaces the background: one of blur (a radius in pixels), a colour, an image.
    The blur's parameters and the rendered cache live here for both frame paths."""

    blur_radius: float = 0.0
    color: tuple[int, int, int] | None = None
    image: np.ndarray | None = None  # RGB, any size; stretched to the frame
    # A colour or an image is the same behind every frame of one size, so it is rendered once
    # per size instead of filling a frame's worth of pixels per frame. One slot: a stream's
    # frames keep their size, and a caller changing sizes at will cannot grow it.
    _rendered: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def blurs(self) -> bool:
        return self.image is None and self.color is None

    @property
    def blur_sigma(self) -> float:
        """The Gaussian's sigma in pixels of the downscaled copy."""
        return max(self.blur_radius, 1.0) / BLUR_DOWNSCALE

    def cached(self, key: tuple[Any, ...], render: Callable[[], Any]) -> Any:
        """The colour or image rendered for `key` (a size, and where it lives), rendered by
        `render` on a miss. Two threads may both render it: the same result."""
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = render()
            self._rendered.clear()
            self._rendered[key] = rendered
        return rendered

    def render(self, frame: np.ndarray) -> np.ndarray:
        if self.blurs:
            return self._blurred(frame)
        return self.cached(frame.shape, lambda: self._rendered_like(frame))

    def _rendered_like(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if self.image is not None:
            rendered = resize(self.image, width, height)
        else:
            rendered = cv2.merge([np.full((height, width), c, np.uint8) for c in self.color])
        rendered = rendered.view()  # read-only without freezing the caller's image
        rendered.flags.writeable = False
        return rendered

    def _blurred(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        small = resize(frame, max(1, width // BLUR_DOWNSCALE), max(1, height // BLUR_DOWNSCALE))
        blurred = cv2.GaussianBlur(small, (0, 0), sigmaX=self.blur_sigma)
        return resize(blurred, width, height)


def composite(frame: np.ndarray, alpha: np.ndarray, background: Background) -> np.ndarray:
    """The person from `frame` over `background`; alpha float (H, W) in [0, 1] at frame size."""
    alpha = np.asarray(alpha, np.float32)
    # One SIMD pass of OpenCV over the pixels: frame * alpha + behind * (1 - alpha), rounded,
    # where numpy would make several passes with temporaries at every step.
    return cv2.blendLinear(frame, background.render(frame), alpha, 1.0 - alpha)
