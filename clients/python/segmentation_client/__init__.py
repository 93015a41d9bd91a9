"""Python client of the SegmentationService."""

from segmentation_client.client import (
    FrameToSend,
    SegmentationClient,
    SegmentationError,
    mask_to_array,
)

__all__ = ["FrameToSend", "SegmentationClient", "SegmentationError", "mask_to_array"]
