"""Every conversion between the wire (the generated protobuf types) and the service's own
types, defaults included: what a stream or a request asks for, and the answers it gets."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from segmentation.v1 import segmentation_pb2 as pb
from service.engines.base import Engine
from service.errors import FrameError, FrameErrorReason, InvalidConfigError, StreamProtocolError
from service.frames.codec import EncodedMask, JpegCodec, MaskEncoding
from service.frames.refine import Background
from service.frames.requests import CompositeRequest, FrameTimings, OutputRequest, SegmentedFrame
from service.streams.answers import FrameAnswer, FrameOutcome, IncomingFrame

DEFAULT_BLUR_RADIUS = 12.0  # pixels: a composite that names no background blurs it this much
DEFAULT_COMPOSITE_QUALITY = 85  # JPEG quality of composites that name none

# An unspecified encoding is RAW_U8, as the proto says.
_MASK_ENCODINGS = {
    pb.MASK_ENCODING_UNSPECIFIED: MaskEncoding.RAW_U8,
    pb.MASK_ENCODING_RAW_U8: MaskEncoding.RAW_U8,
    pb.MASK_ENCODING_PNG: MaskEncoding.PNG,
    pb.MASK_ENCODING_JPEG: MaskEncoding.JPEG,
}
_WIRE_MASK_ENCODINGS = {
    MaskEncoding.RAW_U8: pb.MASK_ENCODING_RAW_U8,
    MaskEncoding.PNG: pb.MASK_ENCODING_PNG,
    MaskEncoding.JPEG: pb.MASK_ENCODING_JPEG,
}
_OUTCOME_STATUS = {
    FrameOutcome.OK: pb.StreamSegmentResponse.OK,
    FrameOutcome.DROPPED: pb.StreamSegmentResponse.DROPPED,
    FrameOutcome.ERROR: pb.StreamSegmentResponse.ERROR,
}

# Each reason's enum value beside its string, looked up once per answer with an error.
WIRE_ERROR_CODES = {
    reason: pb.FrameErrorReason.Value(f"FRAME_ERROR_REASON_{reason.name}")
    for reason in FrameErrorReason
}


@dataclass(frozen=True)
class StreamSettings:
    """A stream's StreamConfig in the service's own terms."""

    stream_id: str  # empty: the server assigns one
    output: OutputRequest
    smoothing_strength: float


def output_request(width: int, height: int, encoding: int, max_pixels: int) -> OutputRequest:
    """A mask request from its wire fields, checked."""
    if encoding not in _MASK_ENCODINGS:
        raise InvalidConfigError(f"unknown mask encoding {encoding}")
    request = OutputRequest(width, height, _MASK_ENCODINGS[encoding])
    request.check(max_pixels)
    return request


def stream_config(first: pb.StreamSegmentRequest) -> pb.StreamConfig:
    """The first message of a stream, which must be its config."""
    if not first.HasField("config"):
        raise StreamProtocolError(
            "the first message of a stream must be a StreamConfig; got a Frame"
        )
    return first.config


async def stream_settings(
    config: pb.StreamConfig, codec: JpegCodec, max_pixels: int
) -> StreamSettings:
    """A stream's config, checked (its model is looked up by the caller)."""
    mask = output_request(config.mask_width, config.mask_height, config.mask_encoding, max_pixels)
    if not 0.0 <= config.temporal_smoothing <= 1.0:
        raise InvalidConfigError(
            f"temporal_smoothing must be in [0, 1]; was {config.temporal_smoothing:g}"
        )
    composite = None
    if config.HasField("composite"):
        composite = await _composite_request(config.composite, codec)
    output = dataclasses.replace(mask, edge_aware=config.edge_aware_upscale, composite=composite)
    return StreamSettings(config.stream_id, output, config.temporal_smoothing)


async def _composite_request(composite: pb.Composite, codec: JpegCodec) -> CompositeRequest:
    quality = composite.jpeg_quality or DEFAULT_COMPOSITE_QUALITY
    if not 1 <= quality <= 100:
        raise InvalidConfigError(f"composite jpeg_quality must be 1..100; was {quality}")
    match composite.WhichOneof("background"):
        case "color_rgb":
            rgb = composite.color_rgb
            background = Background(color=((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255))
        case "image_jpeg":
            try:
                image = await asyncio.to_thread(codec.decode_image, composite.image_jpeg)
            except FrameError as error:
                raise InvalidConfigError(f"composite background image: {error.message}") from None
            background = Background(image=image)
        case "blur_radius" if not 0 < composite.blur_radius <= 200:
            raise InvalidConfigError(
                f"composite blur_radius must be in (0, 200]; was {composite.blur_radius:g}"
            )
        case "blur_radius":
            background = Background(blur_radius=composite.blur_radius)
        case _:
            background = Background(blur_radius=DEFAULT_BLUR_RADIUS)
    return CompositeRequest(background, quality)


def incoming_frame(request: pb.StreamSegmentRequest) -> IncomingFrame:
    """A frame message after the config; a second config breaks the stream's order."""
    if not request.HasField("frame"):
        raise StreamProtocolError("a stream carries one StreamConfig, first; got a second one")
    frame = request.frame
    return IncomingFrame(frame.frame_id, frame.capture_timestamp_us, frame.jpeg)


def stream_response(stream_id: str, answer: FrameAnswer) -> pb.StreamSegmentResponse:
    """One frame's answer, built by one constructor call: the message's fields, and its
    sub-messages' as dicts, which the constructor fills in place (no sub-message built to be
    copied, no attribute set one at a time from Python)."""
    fields: dict[str, object] = {
        "stream_id": stream_id,
        "frame_id": answer.frame_id,
        "capture_timestamp_us": answer.capture_timestamp_us,
        "status": _OUTCOME_STATUS[answer.outcome],
    }
    segmented = answer.segmented
    if segmented is not None:
        if segmented.mask is not None:
            fields["mask"] = _mask_fields(segmented.mask)
        else:
            image = segmented.composited
            fields["composited"] = {
                "width": image.width,
                "height": image.height,
                "jpeg": image.jpeg,
            }
        fields["batch_size"] = segmented.batch_size
        fields["timings"] = _timing_fields(segmented.timings, answer.admission_wait_s)
    if answer.error is not None:
        fields["error_reason"] = answer.error.reason
        fields["error_code"] = WIRE_ERROR_CODES[answer.error.reason]
        fields["error_message"] = answer.error.message
    return pb.StreamSegmentResponse(**fields)


def segment_response(segmented: SegmentedFrame) -> pb.SegmentResponse:
    return pb.SegmentResponse(
        batch_size=segmented.batch_size,
        timings=_timing_fields(segmented.timings, admission_wait_s=0.0),
        mask=_mask_fields(segmented.mask),
    )


def models_response(engines: Sequence[Engine], default_model: str) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[
            pb.ModelInfo(
                name=engine.spec.name,
                input_width=engine.spec.input_width,
                input_height=engine.spec.input_height,
                engine=engine.name,
                device=engine.device,
                is_default=engine.spec.name == default_model,
                batched=max(engine.batch_sizes) > 1,
                batch_sizes=engine.batch_sizes,
            )
            for engine in engines
        ]
    )


def _mask_fields(mask: EncodedMask) -> dict[str, object]:
    return {
        "width": mask.width,
        "height": mask.height,
        "encoding": _WIRE_MASK_ENCODINGS[mask.encoding],
        "data": mask.data,
    }


def _timing_fields(timings: FrameTimings, admission_wait_s: float) -> dict[str, float]:
    return {
        "admission_wait_ms": admission_wait_s * 1e3,
        "decode_ms": timings.decode_s * 1e3,
        "batch_wait_ms": timings.batch_wait_s * 1e3,
        "inference_ms": timings.inference_s * 1e3,
        "encode_ms": timings.encode_s * 1e3,
        "total_ms": (admission_wait_s + timings.total_s) * 1e3,
    }
