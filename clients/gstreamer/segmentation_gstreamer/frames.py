"""Raw video frames as numpy planes: JPEG-encoding them, and building the element's output
(alpha merged, mask alone, or the service's composite) into a buffer GStreamer allocated.
No GStreamer here: a frame is its bytes and a `Layout` read off the caps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from turbojpeg import (
    TJPF_BGR,
    TJPF_BGRA,
    TJPF_BGRX,
    TJPF_GRAY,
    TJPF_RGB,
    TJPF_RGBA,
    TJPF_RGBX,
    TJSAMP_420,
    TurboJPEG,
)

from segmentation.v1 import segmentation_pb2 as pb

_PACKED = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "RGBx": 4, "BGRx": 4, "GRAY8": 1}
_PIXEL_FORMATS = {
    "RGB": TJPF_RGB, "BGR": TJPF_BGR, "RGBA": TJPF_RGBA, "BGRA": TJPF_BGRA,
    "RGBx": TJPF_RGBX, "BGRx": TJPF_BGRX,
}  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Where a frame's planes lie in its buffer (GstVideoInfo's, or a buffer's video meta)."""

    format: str
    width: int
    height: int
    strides: tuple[int, ...]
    offsets: tuple[int, ...]
    size: int  # bytes of a whole frame

    def plane_shapes(self) -> list[tuple[int, int]]:
        """(rows, bytes per row) of each plane."""
        w, h = self.width, self.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        if self.format in _PACKED:
            return [(h, w * _PACKED[self.format])]
        if self.format == "NV12":
            return [(h, w), (ch, 2 * cw)]
        chroma = [(h, w), (ch, cw), (ch, cw)]
        return [*chroma, (h, w)] if self.format == "A420" else chroma  # I420 / A420

    def planes(self, data: memoryview | bytes | np.ndarray) -> list[np.ndarray]:
        """A view of each plane, rows by bytes; no copy."""
        return [
            np.ndarray((rows, width), np.uint8, data, offset, (stride, 1))
            for (rows, width), stride, offset in zip(
                self.plane_shapes(), self.strides, self.offsets, strict=False
            )
        ]

    def pixels(self, data: memoryview | bytes | np.ndarray) -> np.ndarray:
        """A packed format's (height, width, channels) view."""
        channels = _PACKED[self.format]
        return np.ndarray(
            (self.height, self.width, channels), np.uint8, data, self.offsets[0],
            (self.strides[0], channels, 1),
        )  # fmt: skip


class FrameCodec:
    """libjpeg-turbo for one element: frames to JPEG, masks and composites from JPEG."""

    def __init__(self) -> None:
        self._turbo = TurboJPEG()

    def encode(self, layout: Layout, data: memoryview | bytes, quality: int) -> bytes:
        if layout.format in _PIXEL_FORMATS:
            return self._turbo.encode(
                layout.pixels(data), quality, _PIXEL_FORMATS[layout.format], TJSAMP_420
            )
        # YUV goes in as planes, without a colour conversion: libjpeg-turbo wants them one
        # after the other, each row padded to 4 bytes.
        y, u, v = _yuv420_planes(layout, data)
        packed = np.concatenate([_pad_rows(p) for p in (y, u, v)], axis=None)
        return self._turbo.encode_from_yuv(packed, layout.height, layout.width, quality, TJSAMP_420)

    def decode_mask(self, mask: pb.Mask) -> np.ndarray:
        """The mask as uint8 (height, width), 255 = person."""
        if mask.encoding == pb.MASK_ENCODING_JPEG:
            return self._turbo.decode(mask.data, TJPF_GRAY)[:, :, 0]
        if mask.encoding in (pb.MASK_ENCODING_RAW_U8, pb.MASK_ENCODING_UNSPECIFIED):
            return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)
        raise ValueError(f"the element reads JPEG and raw masks, not encoding {mask.encoding}")

    def fill_from_jpeg(self, jpeg: bytes, layout: Layout, out: np.ndarray) -> None:
        """Decodes a composited frame into `out`, laid out as `layout` (the input's format)."""
        if layout.format in _PIXEL_FORMATS:
            layout.pixels(out)[:] = self._turbo.decode(jpeg, _PIXEL_FORMATS[layout.format])
            return
        y, u, v = self._turbo.decode_to_yuv_planes(jpeg)
        planes = layout.planes(out)
        planes[0][:] = y
        u, v = _to_420(u, layout), _to_420(v, layout)
        if layout.format == "NV12":
            planes[1][:, 0::2], planes[1][:, 1::2] = u, v
        else:
            planes[1][:], planes[2][:] = u, v


def fill_with_alpha(
    layout: Layout, data: memoryview | bytes, alpha: np.ndarray, out_layout: Layout,
    out: np.ndarray,
) -> None:  # fmt: skip
    """The frame with `alpha` as its alpha channel: RGBA/BGRA from packed RGB, A420 from YUV."""
    if layout.format in _PIXEL_FORMATS:
        target, source = out_layout.pixels(out), layout.pixels(data)
        # Channel by channel: numpy copies a (height, width) plane with a stride of 3 or 4
        # bytes four times faster than the (height, width, 3) block at once.
        for channel in range(3):
            target[:, :, channel] = source[:, :, channel]
        target[:, :, 3] = alpha
        return
    target_planes = out_layout.planes(out)
    for target, plane in zip(target_planes, _yuv420_planes(layout, data), strict=False):
        target[:] = plane
    target_planes[3][:] = alpha


def fill_mask(alpha: np.ndarray, out_layout: Layout, out: np.ndarray) -> None:
    out_layout.planes(out)[0][:] = alpha


def _yuv420_planes(layout: Layout, data: memoryview | bytes) -> list[np.ndarray]:
    planes = layout.planes(data)
    if layout.format == "NV12":
        y, uv = planes
        return [y, uv[:, 0::2], uv[:, 1::2]]
    return planes[:3]


def _pad_rows(plane: np.ndarray) -> np.ndarray:
    width = plane.shape[1]
    padded = -width % 4
    if padded == 0:
        return plane
    return np.pad(plane, ((0, 0), (0, padded)))


def _to_420(chroma: np.ndarray, layout: Layout) -> np.ndarray:
    """A decoded chroma plane (4:2:0, 4:2:2 or 4:4:4) at 4:2:0: every other row or column."""
    rows, cols = (layout.height + 1) // 2, (layout.width + 1) // 2
    row_step = 2 if chroma.shape[0] > rows else 1
    col_step = 2 if chroma.shape[1] > cols else 1
    return chroma[::row_step, ::col_step][:rows, :cols]
