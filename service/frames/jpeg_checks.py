"""Cheap checks of a JPEG's structure, for decoders that do not make them: nvJPEG on the GPU
(its batched hardware decoder may return a partial image for a truncated or zero-filled frame
instead of failing, where libjpeg-turbo, treating warnings as errors, rejects it).

They read bytes, never pixels: a frame must end with the end-of-image marker after its last
scan (trailing zeros and other bytes after it are allowed, as libjpeg-turbo allows them). In
entropy-coded data a 0xFF byte is always stuffed or a restart marker, so the last start-of-scan
marker in the file is the image's own (an EXIF thumbnail's markers come before it), and an
end-of-image marker after it is the image's. Damage inside the scan data (a flipped bit) is not
caught here: a frame damaged so may decode on the GPU where libjpeg-turbo rejects it.
"""

from __future__ import annotations

from service.errors import FrameError, FrameErrorReason

_START_OF_SCAN = b"\xff\xda"
_END_OF_IMAGE = b"\xff\xd9"


def check_complete(jpeg: bytes) -> None:
    """Raises FrameError(corrupt_jpeg) where the frame has no scan, or its last scan has no
    end-of-image marker after it (truncated, or its tail overwritten)."""
    last_scan = jpeg.rfind(_START_OF_SCAN)
    if last_scan < 0:
        raise FrameError(FrameErrorReason.CORRUPT_JPEG, "the JPEG has no image data (no scan)")
    if jpeg.find(_END_OF_IMAGE, last_scan) < 0:
        raise FrameError(
            FrameErrorReason.CORRUPT_JPEG,
            "the JPEG ends before its end-of-image marker (truncated or overwritten)",
        )
