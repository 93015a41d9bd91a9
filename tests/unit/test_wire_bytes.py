"""The answers' bytes on the wire: `protocol` builds each response in one constructor call, and
what it serializes must be, byte for byte, what filling the message field by field gives (the
way responses were built before, kept here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from service.api import protocol
from service.errors import FrameError, FrameErrorReason
from service.frames.codec import EncodedMask, JpegCodec, MaskEncoding
from service.frames.requests import EncodedImage, FrameTimings, SegmentedFrame
from service.streams.answers import FrameAnswer, FrameOutcome
from tests.photos import astronaut_jpeg, astronaut_rgb

_STATUS = {
    FrameOutcome.OK: pb.StreamSegmentResponse.OK,
    FrameOutcome.DROPPED: pb.StreamSegmentResponse.DROPPED,
    FrameOutcome.ERROR: pb.StreamSegmentResponse.ERROR,
}
_ENCODING = {
    MaskEncoding.RAW_U8: pb.MASK_ENCODING_RAW_U8,
    MaskEncoding.PNG: pb.MASK_ENCODING_PNG,
    MaskEncoding.JPEG: pb.MASK_ENCODING_JPEG,
}


def _fill_timings(message: pb.StageTimings, timings: FrameTimings, wait_s: float) -> None:
    message.admission_wait_ms = wait_s * 1e3
    message.decode_ms = timings.decode_s * 1e3
    message.batch_wait_ms = timings.batch_wait_s * 1e3
    message.inference_ms = timings.inference_s * 1e3
    message.encode_ms = timings.encode_s * 1e3
    message.total_ms = (wait_s + timings.total_s) * 1e3


def _fill_mask(message: pb.Mask, mask: EncodedMask) -> None:
    message.width, message.height = mask.width, mask.height
    message.encoding = _ENCODING[mask.encoding]
    message.data = mask.data


def field_by_field(stream_id: str, answer: FrameAnswer) -> pb.StreamSegmentResponse:
    """The reference: the response filled one attribute at a time."""
    response = pb.StreamSegmentResponse(
        stream_id=stream_id,
        frame_id=answer.frame_id,
        capture_timestamp_us=answer.capture_timestamp_us,
        status=_STATUS[answer.outcome],
    )
    if answer.segmented is not None:
        if answer.segmented.mask is not None:
            _fill_mask(response.mask, answer.segmented.mask)
        else:
            image = answer.segmented.composited
            response.composited.width, response.composited.height = image.width, image.height
            response.composited.jpeg = image.jpeg
        response.batch_size = answer.segmented.batch_size
        _fill_timings(response.timings, answer.segmented.timings, answer.admission_wait_s)
    if answer.error is not None:
        response.error_reason = answer.error.reason
        response.error_code = protocol.WIRE_ERROR_CODES[answer.error.reason]
        response.error_message = answer.error.message
    return response


def _masks() -> list[EncodedMask]:
    """Real masks of the astronaut photo (a threshold of its brightness), as each encoding
    gives them, and an empty one."""
    codec = JpegCodec(4 << 20, 3840 * 2160)
    alpha = (astronaut_rgb().mean(axis=2) > 100).astype(np.float32)
    masks = [codec.encode_mask(alpha, 160, 120, encoding) for encoding in MaskEncoding]
    return [*masks, EncodedMask(0, 0, MaskEncoding.RAW_U8, b"")]


_TIMINGS = (
    FrameTimings(0.0012, 0.0031, 0.0045, 0.0009, 0.0101),
    FrameTimings(),  # all zero: the timings message is still present
)


def _answers() -> list[FrameAnswer]:
    answers = []
    for mask in _masks():
        for timings in _TIMINGS:
            segmented = SegmentedFrame(mask, 3, timings)
            answers.append(FrameAnswer(41, 1_700_000_000_123_456, FrameOutcome.OK, segmented, None))
            answers.append(FrameAnswer(0, 0, FrameOutcome.OK, segmented, None, 0.0021))
    composited = EncodedImage(512, 512, astronaut_jpeg())
    for timings in _TIMINGS:
        answers.append(
            FrameAnswer(7, 9, FrameOutcome.OK, SegmentedFrame(None, 1, timings, composited))
        )
    answers.append(FrameAnswer(8, 10, FrameOutcome.DROPPED))
    error = FrameError(FrameErrorReason.CORRUPT_JPEG, "JPEG decoding failed: bad Huffman table")
    answers.append(FrameAnswer(9, 11, FrameOutcome.ERROR, error=error, admission_wait_s=0.001))
    return answers


@pytest.mark.parametrize("answer", _answers(), ids=lambda a: f"{a.outcome}-{a.frame_id}")
@pytest.mark.parametrize("stream_id", ["load-0", ""])
def test_a_stream_answer_serializes_to_the_same_bytes(stream_id: str, answer: FrameAnswer) -> None:
    built = protocol.stream_response(stream_id, answer)
    reference = field_by_field(stream_id, answer)
    assert built.SerializeToString() == reference.SerializeToString()
    assert built == reference
    assert built.HasField("timings") == (answer.segmented is not None)


@pytest.mark.parametrize("timings", _TIMINGS)
def test_a_unary_answer_serializes_to_the_same_bytes(timings: FrameTimings) -> None:
    mask = _masks()[0]
    reference = pb.SegmentResponse(batch_size=2)
    _fill_timings(reference.timings, timings, 0.0)
    _fill_mask(reference.mask, mask)
    built = protocol.segment_response(SegmentedFrame(mask, 2, timings))
    assert built.SerializeToString() == reference.SerializeToString()
    assert built.HasField("timings") and built.HasField("mask")
