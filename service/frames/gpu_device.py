"""The one seam between the GPU frame path and the device's codec: JPEG decode and encode,
host copies, stream order and device health. Everything else the path does is plain torch
tensor ops, which run the same on the CPU, so its logic is tested on the CPU through
`CpuFrameDevice`.

- `CudaFrameDevice`: nvJPEG through torchvision (`decode_jpeg` of a list on CUDA since 0.20,
  `encode_jpeg` of CUDA tensors since 0.19: 4:4:4 where the CPU sends 4:2:2).
- `CpuFrameDevice`: libjpeg-turbo through PyTurboJPEG, with the same contract: a list decode
  fails whole when one frame in it is corrupt, as torchvision's does.

torchvision 0.26's CUDA JPEG orders itself after no stream of ours: decode writes from a
stream that is not ordered after the caller's (pytorch/vision#9606), and the encoder syncs
only with the stream that was current when it was first built, then queues its last bitstream
copy on a private stream (pytorch/vision#8587, #9060). So `decode` and `encode_jpeg` first
synchronise the caller's stream, and `encode_jpeg` synchronises the device before it reads
the bytes: each costs a host wait, which a batch pays once per call, not per frame.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class FrameDevice(Protocol):
    device: str  # where the path's tensors live: "cuda:0", "cpu"

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        """uint8 RGB (3, H, W) on the device, one per JPEG; raises if any of them fails."""
        ...

    def encode_jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        """uint8 RGB (3, H, W) images on the device, as JPEG bytes, once they are written."""
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

    def check(self) -> None:
        """Raises where the device itself has failed (a sticky CUDA error): it waits for all
        of the device's work, so call it only after something failed."""
        ...

    def mark(self) -> object:
        """A point in the calling thread's stream, for `elapsed_s`."""
        ...

    def elapsed_s(self, start: object, end: object) -> float:
        """Device seconds between two marks; valid after `wait()`."""
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

        self.wait()  # pytorch/vision#9606
        return decode_jpeg(
            [_as_tensor(jpeg) for jpeg in jpegs], mode=ImageReadMode.RGB, device=self.device
        )

    def encode_jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        from torchvision.io import encode_jpeg

        self.wait()  # the images are complete before the encoder's own stream reads them
        encoded = encode_jpeg(images, quality=quality)
        # The bitstream's last copy is queued on a stream we cannot name: wait for them all.
        self._torch.cuda.synchronize(self.device)
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

    def check(self) -> None:
        self._torch.cuda.synchronize(self.device)

    def mark(self) -> object:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_s(self, start: object, end: object) -> float:
        return start.elapsed_time(end) / 1e3  # type: ignore[attr-defined]

    @staticmethod
    def available(device: str) -> CudaFrameDevice | None:
        """The device where torchvision's CUDA JPEG works on it (one tiny decode and encode
        tried), else None, with the reason logged: a GPU host that serves frames on the CPU
        says why."""
        try:
            frame_device = CudaFrameDevice(device)
            image = frame_device.decode([tiny_jpeg()])[0]
            frame_device.encode_jpeg([image], 90)
        except Exception as error:  # no torchvision, no nvJPEG, no CUDA kernels for this GPU
            log.warning(
                "torchvision's CUDA JPEG does not work on %s: %s: %s",
                device,
                type(error).__name__,
                error,
            )
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

    def check(self) -> None:
        pass

    def mark(self) -> object:
        return time.perf_counter()  # CPU tensor ops are done when they return

    def elapsed_s(self, start: object, end: object) -> float:
        return end - start  # type: ignore[operator]


def tiny_jpeg() -> bytes:
    from service.frames.codec import strict_turbojpeg

    return strict_turbojpeg().encode(np.full((16, 16, 3), 128, np.uint8), quality=90)
