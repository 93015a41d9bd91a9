"""What a caller asks of each frame (a mask, or the composited frame) and what it gets back,
in the service's own types: the API layer converts them to and from the wire."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import InvalidConfigError
from service.frames.codec import EncodedMask, MaskEncoding
from service.frames.refine import Background


@dataclass(frozen=True)
class CompositeRequest:
    background: Background
    jpeg_quality: int


@dataclass(frozen=True)
class OutputRequest:
    """What the caller wants back: a mask, or the composited frame. A size of 0 x 0 means the
    frame's own size."""

    width: int
    height: int
    encoding: MaskEncoding
    edge_aware: bool = False  # guided upscaling, which needs the full-resolution frame
    composite: CompositeRequest | None = None  # the composited frame instead of a mask

    @property
    def needs_frame(self) -> bool:
        return self.edge_aware or self.composite is not None

    def check(self, max_pixels: int) -> None:
        if (self.width == 0) != (self.height == 0):
            raise InvalidConfigError(
                f"mask size must give both width and height, or neither; "
                f"was {self.width}x{self.height}"
            )
        if self.width * self.height > max_pixels:
            raise InvalidConfigError(
                f"mask {self.width}x{self.height} has more than {max_pixels} pixels"
            )


@dataclass
class FrameTimings:
    decode_s: float = 0.0
    batch_wait_s: float = 0.0
    inference_s: float = 0.0
    encode_s: float = 0.0
    total_s: float = 0.0

    def by_stage(self, admission_wait_s: float) -> dict[str, float]:
        """Seconds in each stage a frame passes, by the stage names the metrics use."""
        return {
            "admission_wait": admission_wait_s,
            "decode": self.decode_s,
            "batch_wait": self.batch_wait_s,
            "inference": self.inference_s,
            "encode": self.encode_s,
        }


@dataclass(frozen=True)
class EncodedImage:
    width: int
    height: int
    jpeg: bytes


@dataclass(frozen=True)
class SegmentedFrame:
    """One frame's answer: its mask, or its composited frame, and where its time went."""

    mask: EncodedMask | None  # None when a composite was asked for
    batch_size: int
    timings: FrameTimings
    composited: EncodedImage | None = None

    @property
    def sent_bytes(self) -> int:
        """Bytes of the answer's image, mask or composite, as they leave."""
        return len(self.mask.data) if self.mask else len(self.composited.jpeg)
