"""The GPU frame path's image operations as torch tensor ops: the same on a GPU and on the CPU
(where the tests run them). Images are (C, H, W), float unless said otherwise.

The formulas' parameters have one home, `refine` (the smoother's blend, `Background`'s blur
and cache); the CPU path runs them with OpenCV, these with torch, and
tests/unit/test_gpu_frame_path_on_cpu.py checks that both agree within one level of 255 on the same
input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from service.frames.refine import Background


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


def blended(frame: torch.Tensor, behind: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W): frame * alpha + behind * (1 - alpha), rounded, as `refine.composite`'s
    `cv2.blendLinear` computes it."""
    return to_uint8(behind + (frame.float() - behind) * alpha)


def blurred(frame: torch.Tensor, background: Background) -> torch.Tensor:
    """float (3, H, W): the frame blurred as `Background` blurs it on the CPU (a copy
    `BLUR_DOWNSCALE` times smaller, a Gaussian of its `blur_sigma` spanning 3 sigma as OpenCV's
    for 8-bit images, scaled back); the border reflects as OpenCV's default does."""
    import torch
    import torch.nn.functional as F

    from service.frames.refine import BLUR_DOWNSCALE

    height, width = frame.shape[1:]
    # The mean of each block, as OpenCV's halvings and area filter give at a whole ratio, and
    # rounded to bytes where OpenCV keeps bytes: the two paths' blurs then agree to a level.
    size = (max(1, height // BLUR_DOWNSCALE), max(1, width // BLUR_DOWNSCALE))
    small = F.interpolate(frame.float()[None], size, mode="area")[0].round()
    sigma = background.blur_sigma
    half = max(1, int(sigma * 6 + 1.5) // 2)  # OpenCV's kernel size for 8-bit images, halved
    x = torch.arange(-half, half + 1, dtype=torch.float32, device=frame.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    # OpenCV's BORDER_REFLECT_101 is torch's "reflect", which needs a pad under the size.
    mode = "reflect" if half < min(small.shape[1:]) else "replicate"
    padded = F.pad(small[None], (half, half, half, half), mode=mode)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    both = F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return resized(both[0].round(), width, height)
