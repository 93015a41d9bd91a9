"""What a caller and its stream exchange: the frames it hands in, each answer with its frame,
the counters of what failover cost, and the error a call the service refused raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from segmentation.v1 import segmentation_pb2 as pb


class SegmentationError(Exception):
    """The service refused a call; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class FrameToSend:
    frame_id: int
    jpeg: bytes
    capture_timestamp_us: int = 0
    # The caller's own object for this frame (a buffer, a future), handed back with its Answer:
    # an adapter finds what the answer is for without a map of its own.
    context: object = field(default=None, compare=False, repr=False)


@dataclass
class StreamStats:
    """What failover cost, readable while the stream runs."""

    reconnects: int = 0  # calls reopened after a retryable end or an answer timeout
    frames_dropped_locally: int = 0  # frames answered DROPPED "reconnecting" by the client


@dataclass(frozen=True)
class Answer:
    """One frame's answer with the frame it answers (None only for an answer to a frame this
    stream never sent, which a server keeping its word never gives)."""

    frame: FrameToSend | None
    response: pb.StreamSegmentResponse
