"""A batch's JPEGs decoded on the device, telling a bad frame from a broken device.

A list decode fails whole when one frame in it is corrupt, so then each is decoded alone and
only the corrupt ones fail, each with its own `corrupt_jpeg`. But a decode also fails when the
device does: nvJPEG's own out-of-memory comes back as a plain RuntimeError that gives its
status as a number, and a sticky CUDA error fails every call after it. Those are
`EngineFailure`s, for the whole batch: after any failure the device is synchronised, and if that
raises, the replica is broken, not the frame.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from service.errors import EngineFailure, FrameError, FrameErrorReason
from service.frames.gpu_device import FrameDevice

if TYPE_CHECKING:
    import torch


class DeviceDecoder:
    def __init__(self, device: FrameDevice) -> None:
        self._device = device

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor | FrameError]:
        """uint8 (3, H, W) on the device for each JPEG, or its FrameError; raises
        EngineFailure where the device failed."""
        try:
            return list(self._device.decode(jpegs))
        except Exception as error:
            self.raise_if_broken(error)  # else the frames were bad
            if len(jpegs) == 1:
                return [_corrupt(error)]
        return [self._decode_one(jpeg) for jpeg in jpegs]

    def _decode_one(self, jpeg: bytes) -> torch.Tensor | FrameError:
        try:
            return self._device.decode([jpeg])[0]
        except Exception as error:
            self.raise_if_broken(error)  # else the frames were bad
            return _corrupt(error)

    def raise_if_broken(self, error: BaseException) -> None:
        """An EngineFailure where the device, not a frame, failed: its memory exhausted, or a
        sticky CUDA error that a device synchronise raises again (this process cannot use the
        device any more)."""
        if out_of_device_memory(error):
            raise EngineFailure(f"device memory exhausted: {error}") from error
        try:
            self._device.check()
        except Exception as sticky:
            raise EngineFailure(
                f"the device failed ({sticky}) after: {error}", recoverable=False
            ) from error


# torchvision 0.22-0.26 end each nvJPEG or CUDA failure with the status as a number
# ("Failed to decode batch: 5", "image encoding failed: 5"), never its name; the decode wraps it
# in "Error while decoding JPEG images: ..." with a C++ backtrace after it, and torch's own
# allocation failures, wrapped or not, say "out of memory".
_NVJPEG_ALLOCATOR_FAILURE = re.compile(  # NVJPEG_STATUS_ALLOCATOR_FAILURE is 5
    r"(?:Failed to (?!synchronize CUDA stream)[A-Za-z ]+|image encoding failed): 5\b"
)
_CUDA_MEMORY_ALLOCATION = re.compile(  # cudaErrorMemoryAllocation is 2
    r"(?:Failed to synchronize CUDA stream|CUDA ERROR): 2\b"
)


def out_of_device_memory(error: BaseException) -> bool:
    """CUDA's or torch's out-of-memory (torch.OutOfMemoryError says "out of memory" too), or
    nvJPEG's allocator failure, as torchvision reports them."""
    text = str(error)
    return (
        "out of memory" in text.lower()
        or _NVJPEG_ALLOCATOR_FAILURE.search(text) is not None
        or _CUDA_MEMORY_ALLOCATION.search(text) is not None
    )


def _corrupt(error: Exception) -> FrameError:
    return FrameError(FrameErrorReason.CORRUPT_JPEG, f"JPEG decoding failed: {error}")
