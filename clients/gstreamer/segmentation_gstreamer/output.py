"""What leaves the element for each frame: its answer, and the last good mask for a frame the
service did not segment, written into the output frame's pixels (no GStreamer here)."""

from __future__ import annotations

import numpy as np

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_gstreamer import modes
from segmentation_gstreamer.frames import FrameCodec, Layout, fill_mask, fill_with_alpha


class OutputPolicy:
    """One per stream: it keeps the last good mask and counts the frames not segmented."""

    def __init__(self, mode: str, codec: FrameCodec, unmasked_when_dropped: bool) -> None:
        self._mode = mode
        self._codec = codec
        self._unmasked_when_dropped = unmasked_when_dropped
        self._last_mask: np.ndarray | None = None
        self.frames_dropped = 0

    def passes_through(self, answer: pb.StreamSegmentResponse) -> bool:
        """Whether the input buffer leaves as it is: a composite the service did not make.
        Counts the frame when it was not segmented."""
        segmented = answer.status == pb.StreamSegmentResponse.OK
        if not segmented:
            self.frames_dropped += 1
        return self._mode in modes.COMPOSITES and not segmented

    def fill(
        self,
        answer: pb.StreamSegmentResponse,
        layout: Layout,
        out_layout: Layout,
        source: bytes | memoryview | None,
        pixels: np.ndarray,
    ) -> None:
        """Writes the output frame into `pixels`; `source` is the input frame's bytes (needed
        in alpha mode only)."""
        if self._mode in modes.COMPOSITES:
            self._codec.fill_from_jpeg(answer.composited.jpeg, out_layout, pixels)
            return
        segmented = answer.status == pb.StreamSegmentResponse.OK
        alpha = self.alpha(answer if segmented else None, layout.height, layout.width)
        if self._mode == modes.MASK:
            fill_mask(alpha, out_layout, pixels)
        else:
            assert source is not None, "alpha mode merges the mask into the input frame"
            fill_with_alpha(layout, source, alpha, out_layout, pixels)

    def alpha(self, answer: pb.StreamSegmentResponse | None, height: int, width: int) -> np.ndarray:
        """The answer's mask; for a frame not segmented the last good one, or none (all
        opaque) when there is none of this size or the element is asked to leave it unmasked."""
        if answer is not None:
            self._last_mask = self._codec.decode_mask(answer.mask)
            return self._last_mask
        last = self._last_mask
        if last is None or last.shape != (height, width) or self._unmasked_when_dropped:
            return np.full((height, width), 255, np.uint8)
        return last
