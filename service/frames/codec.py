"""JPEG frames in, model-sized pixels out; alpha masks out as bytes.

Decoding reads the header first and refuses a frame over the byte or pixel limit before any
pixel is allocated. libjpeg-turbo then decodes straight to the cheapest power-of-two DCT scale
that comes near the model's input (much cheaper than a full decode), and the result is fitted
to the input as the model's spec says: stretched, as MediaPipe does, or letterboxed (longer side
to the input, padded bottom and right), as DeepLab does. When the answer needs the frame itself
(edge-aware upscaling, composites), the decode is at that size, and the model's input is taken
from it through the model's own scale, so the model sees nearly the same pixels either way. Warnings
from libjpeg-turbo (a truncated or damaged file) are errors here: a half-decoded frame must not
reach the model.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from PIL import Image
from turbojpeg import (
    TJCS_CMYK,
    TJCS_YCCK,
    TJFLAG_LIMITSCANS,
    TJFLAG_STOPONWARNING,
    TJPF_GRAY,
    TJPF_RGB,
    TJSAMP_GRAY,
    TurboJPEG,
)

from models.registry import Fit
from service.errors import FrameError, FrameErrorReason
from service.frames.resize import resize

DECODE_FLAGS = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
_MASK_JPEG_QUALITY = 90
_PNG_COMPRESS_LEVEL = 1  # masks are mostly flat: level 1 is much faster than 6, barely larger
# A DCT scale may leave the decoded image this much smaller than the model input: a slight
# stretch is cheaper than decoding at twice the size, and the masks agree (IoU >= 0.99).
MIN_COVERAGE = 0.9
_FAST_SCALES = ((1, 8), (1, 4), (1, 2), (1, 1))  # smallest first
# DeepLab pads with its mean pixel 127.5; 128 is the nearest uint8 (0.004 off after normalising).
LETTERBOX_FILL = 128


class _StrictTurboJPEG(TurboJPEG):
    """TurboJPEG that raises on libjpeg-turbo warnings instead of returning a damaged image.

    PyTurboJPEG 1.x reports a warning with `warnings.warn` and returns the partial image, even
    with TJFLAG_STOPONWARNING, and has no public option to raise instead. Its private reporter
    is the one place to change that: turning warnings into errors with
    `warnings.catch_warnings` would change process-wide state from several codec threads at
    once (it is not thread-safe before Python 3.14). The version is pinned below 2, and
    `tests/integration/test_corrupt_frames.py` fails if a release renames the method.
    """

    def _TurboJPEG__report_error(self, handle: object) -> None:
        raise OSError(self._TurboJPEG__get_error_string(handle))  # type: ignore[attr-defined]


def strict_turbojpeg() -> TurboJPEG:
    """A libjpeg-turbo handle whose warnings are errors (for decoders outside JpegCodec)."""
    return _StrictTurboJPEG()


@dataclass(frozen=True)
class DecodedFrame:
    pixels: np.ndarray  # uint8 RGB, shape (input_height, input_width, 3)
    width: int  # of the frame as sent
    height: int
    frame: np.ndarray | None = None  # uint8 RGB at the output size, when asked for
    # (width, height) of the frame inside `pixels` (top left) when letterboxed; the rest is fill.
    content_size: tuple[int, int] | None = None


class MaskEncoding(StrEnum):
    """How a mask travels back: the codec's own names, mapped to the wire at the edge."""

    RAW_U8 = "raw_u8"  # one byte per pixel, row-major
    PNG = "png"
    JPEG = "jpeg"  # grayscale


@dataclass(frozen=True)
class EncodedMask:
    width: int
    height: int
    encoding: MaskEncoding
    data: bytes


def letterbox_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The size a width x height frame takes in the box, aspect kept, its longer side filling it."""
    scale = min(box_width / width, box_height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterboxed(
    rgb: np.ndarray, box_width: int, box_height: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image resized into the box's top left, padded with LETTERBOX_FILL; and its size there."""
    width, height = letterbox_size(rgb.shape[1], rgb.shape[0], box_width, box_height)
    box = np.full((box_height, box_width, 3), LETTERBOX_FILL, np.uint8)
    box[:height, :width] = resize(rgb, width, height)
    return box, (width, height)


def scaled_size(width: int, height: int, factor: tuple[int, int]) -> tuple[int, int]:
    num, denom = factor
    return math.ceil(width * num / denom), math.ceil(height * num / denom)


def dct_scale_for(width: int, height: int, need_width: int, need_height: int) -> tuple[int, int]:
    """The cheapest DCT scale whose image reaches MIN_COVERAGE of the needed size."""
    for factor in _FAST_SCALES:
        scaled_width, scaled_height = scaled_size(width, height, factor)
        if (
            scaled_width >= MIN_COVERAGE * need_width
            and scaled_height >= MIN_COVERAGE * need_height
        ):
            return factor
    return (1, 1)


def to_bytes(alpha: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1] (float) as uint8 0..255, rounded. Alphas are never negative (model
    probabilities, and blends or clipped fits of them): the conversion takes absolute values,
    and saturates above 1."""
    if alpha.dtype == np.uint8:
        return alpha
    return cv2.convertScaleAbs(alpha, alpha=255.0)


class JpegCodec:
    """Thread-safe: every call opens its own libjpeg-turbo handle."""

    def __init__(self, max_frame_bytes: int, max_frame_pixels: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_frame_pixels = max_frame_pixels
        self._turbo = _StrictTurboJPEG()

    def read_size(self, jpeg: bytes) -> tuple[int, int]:
        """Width and height from the header, after the byte and pixel limits."""
        if not jpeg:
            raise FrameError(FrameErrorReason.EMPTY_FRAME, "the frame has no bytes")
        if len(jpeg) > self.max_frame_bytes:
            raise FrameError(
                FrameErrorReason.FRAME_TOO_LARGE,
                f"frame is {len(jpeg)} bytes; the limit is {self.max_frame_bytes}",
            )
        try:
            width, height, _subsample, colorspace = self._turbo.decode_header(jpeg)
        except OSError as error:
            raise FrameError(
                FrameErrorReason.CORRUPT_JPEG, f"not a readable JPEG header: {error}"
            ) from None
        if width * height > self.max_frame_pixels:
            raise FrameError(
                FrameErrorReason.TOO_MANY_PIXELS,
                f"frame is {width}x{height} = {width * height} pixels; "
                f"the limit is {self.max_frame_pixels}",
            )
        if colorspace in (TJCS_CMYK, TJCS_YCCK):
            raise FrameError(
                FrameErrorReason.UNSUPPORTED_JPEG,
                "CMYK/YCCK JPEGs are not supported; send RGB (YCbCr) or grayscale frames",
            )
        return width, height

    def decode_for_model(
        self,
        jpeg: bytes,
        input_width: int,
        input_height: int,
        output_size: tuple[int, int] | None = None,
        fit: Fit = "stretch",
    ) -> DecodedFrame:
        """The frame fitted to the model input (`fit`); with `output_size` (width, height; 0x0
        for the frame's own size) also the frame itself at that size, from the same decode."""
        width, height = self.read_size(jpeg)
        need_width, need_height = input_width, input_height
        if fit == "letterbox":
            need_width, need_height = letterbox_size(width, height, input_width, input_height)
        model_factor = factor = dct_scale_for(width, height, need_width, need_height)
        if output_size is not None:
            output_size = (output_size[0] or width, output_size[1] or height)
            need_width, need_height = (
                max(need_width, output_size[0]),
                max(need_height, output_size[1]),
            )
            factor = dct_scale_for(width, height, need_width, need_height)
        try:
            rgb = self._turbo.decode(
                jpeg, pixel_format=TJPF_RGB, scaling_factor=factor, flags=DECODE_FLAGS
            )
        except OSError as error:
            raise FrameError(
                FrameErrorReason.CORRUPT_JPEG, f"JPEG decoding failed: {error}"
            ) from None
        frame = None
        if output_size is not None:
            frame = resize(rgb, *output_size)
            if factor != model_factor:
                # The model sees nearly what a decode at its own scale gives (a shrink by a
                # whole factor stands in for the DCT's scaling), whatever output was asked for,
                # and the shrink by a whole factor is cheaper than one straight to the input.
                rgb = resize(rgb, *scaled_size(width, height, model_factor))
        if fit == "letterbox":
            pixels, content_size = letterboxed(rgb, input_width, input_height)
            return DecodedFrame(pixels, width, height, frame, content_size)
        return DecodedFrame(resize(rgb, input_width, input_height), width, height, frame)

    def decode_image(self, jpeg: bytes) -> np.ndarray:
        """A whole image at its own size, within the same limits as frames."""
        width, height = self.read_size(jpeg)
        return self.decode_for_model(jpeg, width, height).pixels

    def encode_rgb(self, rgb: np.ndarray, quality: int) -> bytes:
        return self._turbo.encode(rgb, quality=quality, pixel_format=TJPF_RGB)

    def encode_mask(
        self, alpha: np.ndarray, width: int, height: int, encoding: MaskEncoding
    ) -> EncodedMask:
        """Scales an alpha in [0, 1] to width x height and encodes it. The alpha becomes bytes
        at the model's size first, so the resize and the encoder touch bytes, not floats."""
        alpha_u8 = resize(to_bytes(alpha), width, height)
        match encoding:
            case MaskEncoding.PNG:
                buffer = io.BytesIO()
                Image.fromarray(alpha_u8).save(
                    buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL
                )
                data = buffer.getvalue()
            case MaskEncoding.JPEG:
                data = self._turbo.encode(
                    alpha_u8[:, :, None],
                    quality=_MASK_JPEG_QUALITY,
                    pixel_format=TJPF_GRAY,
                    jpeg_subsample=TJSAMP_GRAY,
                )
            case MaskEncoding.RAW_U8:
                data = alpha_u8.tobytes()
        return EncodedMask(width=width, height=height, encoding=encoding, data=data)
