"""Python client of the SegmentationService."""

from segmentation_client.client import (
    FrameToSend,
    RetryPolicy,
    SegmentationClient,
    SegmentationError,
    StreamStats,
    mask_to_array,
)
from segmentation_client.resumable import RECONNECTING, Answer, ResumableStream

__all__ = [
    "RECONNECTING",
    "Answer",
    "FrameToSend",
    "ResumableStream",
    "RetryPolicy",
    "SegmentationClient",
    "SegmentationError",
    "StreamStats",
    "mask_to_array",
]
