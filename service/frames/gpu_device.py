"""The one seam between the GPU frame path and the device's codec: JPEG decode and encode,
host copies and stream order. Everything else the path does is plain torch tensor ops, which
run the same on the CPU, so its logic is tested on the CPU through `CpuFrameDevice`.

- `CudaFrameDevice`: nvJPEG through torchvision (`decode_jpeg` of a list on CUDA since 0.20,
  `encode_jpeg` of CUDA tensors since 0.19: 4:4:4 where the CPU sends 4:2:2).
- `CpuFrameDevice`: libjpeg-turbo through PyTurboJPEG, with the same contract: a list decode
  fails whole when one frame in it is corrupt, as torchvision's does.

In torchvision 0.26 each CUDA decode or encode holds a process-wide lock and waits on the host,
and decode writes from a stream that is not ordered after the caller's (pytorch/vision#9606):
`decode` synchronises the caller's stream first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class FrameDevice(Protocol):
    device: str  # where the path's tensors live: "cuda:0", "cpu"

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        """uint8 RGB (3, H, W) on the device, one per JPEG; raises if any of them fails."""
        ...

    def encode_jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        """uint8 RGB (3, H, W) images on the device, as JPEG bytes."""
        ...

    def stream(self) -> contextlib.AbstractContextManager[object]:
        """The calling engine thread's own stream, current for the block."""
        ...

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host copy, started; valid after `wait()`."""
        ...

    def wait(self) -> None:
        """Waits for the copies started on the calling thread's stream."""
        ...


def _as_tensor(jpeg: bytes) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.frombuffer(jpeg, np.uint8).copy())


class CudaFrameDevice:
    """nvJPEG through torchvision on one CUDA device."""

    def __init__(self, device: str) -> None:
        import torch
        import torchvision.io  # noqa: F401  (fails here, not mid-batch, where it is missing)

        self.device = device
        self._torch = torch
        self._streams = threading.local()

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        self._torch.cuda.current_stream(self.device).synchronize()  # pytorch/vision#9606
        return decode_jpeg(
            [_as_tensor(jpeg) for jpeg in jpegs], mode=ImageReadMode.RGB, device=self.device
        )

    def encode_jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        from torchvision.io import encode_jpeg

        encoded = encode_jpeg(images, quality=quality)
        return [data.cpu().numpy().tobytes() for data in encoded]

    @contextlib.contextmanager
    def stream(self) -> Iterator[object]:
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = self._streams.stream = self._torch.cuda.Stream(self.device)
        with self._torch.cuda.stream(stream):
            yield stream

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        host = self._torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)

    def wait(self) -> None:
        self._torch.cuda.current_stream(self.device).synchronize()

    @staticmethod
    def available(device: str) -> CudaFrameDevice | None:
        """The device where torchvision's CUDA JPEG works on it (one tiny decode and encode
        tried), else None."""
        try:
            frame_device = CudaFrameDevice(device)
            image = frame_device.decode([tiny_jpeg()])[0]
            frame_device.encode_jpeg([image], 90)
        except Exception:  # no torchvision, no nvJPEG, no CUDA kernels for this GPU: no path
            return None
        return frame_device


class CpuFrameDevice:
    """libjpeg-turbo and torch CPU tensors: the GPU path's logic, run on the CPU."""

    device = "cpu"

    def __init__(self) -> None:
        from service.frames.codec import strict_turbojpeg

        self._turbo = strict_turbojpeg()

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        import torch
        from turbojpeg import TJPF_RGB

        from service.frames.codec import DECODE_FLAGS

        # Each decoded first: one failure fails the list, as torchvision's list decode does.
        decoded = [
            self._turbo.decode(jpeg, pixel_format=TJPF_RGB, flags=DECODE_FLAGS) for jpeg in jpegs
        ]
        return [torch.from_numpy(rgb).permute(2, 0, 1) for rgb in decoded]

    def encode_jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        from turbojpeg import TJPF_RGB, TJSAMP_444

        return [
            self._turbo.encode(
                np.ascontiguousarray(image.permute(1, 2, 0).numpy()),
                quality=quality,
                pixel_format=TJPF_RGB,
                jpeg_subsample=TJSAMP_444,  # as nvJPEG encodes
            )
            for image in images
        ]

    def stream(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    def wait(self) -> None:
        pass


def tiny_jpeg() -> bytes:
    from service.frames.codec import strict_turbojpeg

    return strict_turbojpeg().encode(np.full((16, 16, 3), 128, np.uint8), quality=90)
