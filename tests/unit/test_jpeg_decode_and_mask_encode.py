"""JPEG decoding with its limits, and mask encoding, on real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import mask_to_array
from service.errors import FrameError, FrameErrorReason
from service.frames.codec import (
    LETTERBOX_FILL,
    MIN_COVERAGE,
    JpegCodec,
    MaskEncoding,
    dct_scale_for,
    scaled_size,
)
from tests.photos import (
    astronaut_jpeg,
    astronaut_rgb,
    cmyk_jpeg,
    encode_jpeg,
    runaway_scans_jpeg,
    video_frame_jpeg,
)


@pytest.fixture
def codec() -> JpegCodec:
    return JpegCodec(max_frame_bytes=1 << 20, max_frame_pixels=1920 * 1080)


def test_decodes_to_the_model_input_and_reports_the_frame_size(codec: JpegCodec) -> None:
    decoded = codec.decode_for_model(astronaut_jpeg(), 256, 144)
    assert decoded.pixels.shape == (144, 256, 3)
    assert decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (512, 512)
    # The stretched pixels are the photo's: compare with a plain full-size resize.
    expected = np.asarray(Image.fromarray(astronaut_rgb()).resize((256, 144), Image.BILINEAR))
    assert np.abs(decoded.pixels.astype(int) - expected).mean() < 4


@pytest.mark.parametrize(
    ("size", "model_input", "factor"),
    [
        ((512, 512), (256, 256), (1, 2)),
        ((640, 480), (256, 256), (1, 2)),  # 240 rows stretched to 256: cheaper than 5/8
        ((1280, 720), (256, 256), (1, 2)),  # 1/4 would leave 180 of 256 rows
        ((1280, 720), (256, 144), (1, 4)),
        ((1920, 1080), (256, 144), (1, 8)),  # 135 of 144 rows: within MIN_COVERAGE
        ((200, 100), (256, 256), (1, 1)),  # smaller than the input: decoded whole, then stretched
    ],
)
def test_decodes_at_the_cheapest_power_of_two_scale_near_the_input(
    codec: JpegCodec,
    size: tuple[int, int],
    model_input: tuple[int, int],
    factor: tuple[int, int],
) -> None:
    assert dct_scale_for(*size, *model_input) == factor
    if factor != (1, 1):
        width, height = scaled_size(*size, factor)
        assert width >= MIN_COVERAGE * model_input[0] and height >= MIN_COVERAGE * model_input[1]
        # The next smaller power of two would have fallen short.
        smaller = scaled_size(*size, (factor[0], factor[1] * 2))
        assert smaller[0] < MIN_COVERAGE * model_input[0] or (
            smaller[1] < MIN_COVERAGE * model_input[1]
        )
    decoded = codec.decode_for_model(video_frame_jpeg(*size), *model_input)
    assert decoded.pixels.shape == (model_input[1], model_input[0], 3)


@pytest.mark.parametrize(
    ("size", "content_size"),
    [((640, 480), (513, 385)), ((480, 640), (385, 513)), ((300, 300), (513, 513))],
)
def test_letterbox_fits_the_longer_side_and_pads_bottom_and_right(
    codec: JpegCodec, size: tuple[int, int], content_size: tuple[int, int]
) -> None:
    decoded = codec.decode_for_model(video_frame_jpeg(*size), 513, 513, fit="letterbox")
    assert decoded.pixels.shape == (513, 513, 3)
    assert decoded.content_size == content_size
    width, height = content_size
    assert np.all(decoded.pixels[height:] == LETTERBOX_FILL)
    assert np.all(decoded.pixels[:, width:] == LETTERBOX_FILL)
    # The frame inside is the photo's, aspect kept: compare with a plain resize.
    expected = np.asarray(Image.open(io.BytesIO(video_frame_jpeg(*size))).resize(content_size))
    assert np.abs(decoded.pixels[:height, :width].astype(int) - expected).mean() < 4


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
@pytest.mark.parametrize("fit", ["stretch", "letterbox"])
def test_the_model_sees_the_same_pixels_whatever_output_is_asked_for(
    codec: JpegCodec, size: tuple[int, int], fit: str
) -> None:
    # Composite and edge-aware answers need the frame at full size, so it is decoded whole;
    # the model's input still comes out as from a decode at the model's own scale.
    jpeg = video_frame_jpeg(*size)
    model_input = (256, 256) if fit == "stretch" else (513, 513)
    alone = codec.decode_for_model(jpeg, *model_input, fit=fit)
    with_frame = codec.decode_for_model(jpeg, *model_input, (0, 0), fit=fit)
    assert with_frame.frame is not None and with_frame.frame.shape == (size[1], size[0], 3)
    assert with_frame.content_size == alone.content_size
    assert np.abs(with_frame.pixels.astype(int) - alone.pixels).mean() < 1


def assert_frame_error(reason: FrameErrorReason, call, *args: object) -> FrameError:
    with pytest.raises(FrameError) as caught:
        call(*args)
    assert caught.value.reason == reason, caught.value
    return caught.value


def test_empty_frame(codec: JpegCodec) -> None:
    assert_frame_error(FrameErrorReason.EMPTY_FRAME, codec.decode_for_model, b"", 256, 256)


def test_too_many_bytes_is_refused_before_reading(codec: JpegCodec) -> None:
    error = assert_frame_error(
        FrameErrorReason.FRAME_TOO_LARGE, codec.decode_for_model, b"\xff" * (2 << 20), 256, 256
    )
    assert str(2 << 20) in error.message and str(1 << 20) in error.message


def test_too_many_pixels_is_refused_from_the_header() -> None:
    small_limit = JpegCodec(max_frame_bytes=1 << 20, max_frame_pixels=640 * 480 - 1)
    jpeg = video_frame_jpeg(640, 480)
    error = assert_frame_error(
        FrameErrorReason.TOO_MANY_PIXELS, small_limit.decode_for_model, jpeg, 256, 256
    )
    assert "640x480" in error.message


def test_a_header_claiming_a_huge_frame_is_refused_without_decoding(codec: JpegCodec) -> None:
    jpeg = bytearray(video_frame_jpeg(64, 48))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    error = assert_frame_error(
        FrameErrorReason.TOO_MANY_PIXELS, codec.decode_for_model, bytes(jpeg), 256, 256
    )
    assert "60000x60000" in error.message


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_jpeg_is_corrupt_not_half_decoded(codec: JpegCodec, keep: float) -> None:
    jpeg = astronaut_jpeg()
    assert_frame_error(
        FrameErrorReason.CORRUPT_JPEG,
        codec.decode_for_model,
        jpeg[: int(len(jpeg) * keep)],
        256,
        256,
    )


def test_random_bytes_are_corrupt(codec: JpegCodec) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    error = assert_frame_error(
        FrameErrorReason.CORRUPT_JPEG, codec.decode_for_model, noise, 256, 256
    )
    assert "JPEG" in error.message


def test_a_progressive_jpeg_with_runaway_scans_is_refused() -> None:
    codec = JpegCodec(max_frame_bytes=1 << 22, max_frame_pixels=1 << 22)
    with pytest.raises(FrameError) as caught:
        codec.decode_for_model(runaway_scans_jpeg(), 256, 256)
    assert caught.value.reason == FrameErrorReason.CORRUPT_JPEG


def test_cmyk_gets_a_specific_error(codec: JpegCodec) -> None:
    error = assert_frame_error(
        FrameErrorReason.UNSUPPORTED_JPEG, codec.decode_for_model, cmyk_jpeg(), 256, 256
    )
    assert "CMYK" in error.message


def test_grayscale_and_progressive_frames_decode(codec: JpegCodec) -> None:
    gray = np.asarray(Image.fromarray(astronaut_rgb()).convert("L"))
    decoded = codec.decode_for_model(encode_jpeg(gray), 256, 256)
    assert decoded.pixels.shape == (256, 256, 3)
    assert np.array_equal(decoded.pixels[..., 0], decoded.pixels[..., 1])
    progressive = encode_jpeg(astronaut_rgb(), progressive=True)
    assert codec.decode_for_model(progressive, 256, 256).pixels.shape == (256, 256, 3)


@pytest.mark.parametrize(
    ("encoding", "wire_encoding"),
    [
        (MaskEncoding.RAW_U8, pb.MASK_ENCODING_RAW_U8),
        (MaskEncoding.PNG, pb.MASK_ENCODING_PNG),
        (MaskEncoding.JPEG, pb.MASK_ENCODING_JPEG),
    ],
)
def test_masks_are_upscaled_and_encoded(
    codec: JpegCodec, encoding: MaskEncoding, wire_encoding: int
) -> None:
    alpha = np.zeros((144, 256), np.float32)
    alpha[:, 128:] = 1.0  # right half is "person"
    encoded = codec.encode_mask(alpha, 640, 360, encoding)
    assert (encoded.width, encoded.height, encoded.encoding) == (640, 360, encoding)
    mask = mask_to_array(pb.Mask(width=640, height=360, encoding=wire_encoding, data=encoded.data))
    assert mask.shape == (360, 640)
    assert mask[:, :300].max() <= 10 and mask[:, 340:].min() >= 245
