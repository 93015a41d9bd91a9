"""The GPU frame path's image operations as torch tensor ops: the same on a GPU and on the CPU
(where the tests run them). Images are (C, H, W), float unless said otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def smoothing_blend(strength: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`refine.TemporalSmoother`'s blend of the previous alpha into the new one, in torch:
    weight 1 - (1 - H(p))^2 (H the binary entropy in bits) times `strength`."""
    import torch

    def blend(previous: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if previous.is_cuda:  # written on another thread's stream: keep it until this one read it
            previous.record_stream(torch.cuda.current_stream(previous.device))
        p = alpha.clamp(1e-6, 1 - 1e-6)
        entropy = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
        weight = (1.0 - (1.0 - entropy) ** 2) * strength
        return alpha + (previous - alpha) * weight

    return blend


def resized(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """float (C, H, W) at width x height: bilinear, antialiased where it shrinks."""
    import torch.nn.functional as F

    if tuple(image.shape[-2:]) == (height, width):
        return image
    shrinks = image.shape[-1] > width or image.shape[-2] > height
    return F.interpolate(
        image[None], (height, width), mode="bilinear", align_corners=False, antialias=shrinks
    )[0]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    import torch

    return image.round().clamp(0, 255).to(torch.uint8)


def blurred(frame: torch.Tensor, radius: float) -> torch.Tensor:
    """float (3, H, W): the frame blurred as `Background` blurs it on the CPU (a quarter-size
    copy, a Gaussian of radius / 4 spanning 3 sigma as OpenCV's for 8-bit images, scaled
    back); the border repeats its edge pixels."""
    import torch
    import torch.nn.functional as F

    height, width = frame.shape[1:]
    small = resized(frame.float(), max(1, width // 4), max(1, height // 4))
    sigma = max(radius, 1.0) / 4
    half = max(1, round(sigma * 3))
    x = torch.arange(-half, half + 1, dtype=torch.float32, device=frame.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(small[None], (half, half, half, half), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    both = F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return resized(both[0], width, height)
