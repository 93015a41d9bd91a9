"""A failure of the element as an error message on the bus: the GStreamer error code, and the
reason in words, from the service's status code where it refused the stream."""

from __future__ import annotations

import gi

gi.require_version("Gst", "1.0")
import grpc  # noqa: E402
from gi.repository import Gst  # noqa: E402

from segmentation_client import SegmentationError  # noqa: E402

# How a refusal reaches the bus: the GStreamer error code, and the reason in words.
REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: (Gst.ResourceError.NOT_AUTHORIZED, "the token was refused"),
    grpc.StatusCode.NOT_FOUND: (Gst.ResourceError.NOT_FOUND, "the model is unknown"),
    grpc.StatusCode.UNAVAILABLE: (Gst.ResourceError.OPEN_READ_WRITE, "no replica answered"),
    grpc.StatusCode.INVALID_ARGUMENT: (Gst.ResourceError.SETTINGS, "the settings were refused"),
}


def stream_failure(failure: Exception) -> tuple[Gst.ResourceError, str]:
    """The error code and message of a stream that cannot go on."""
    code, reason = Gst.ResourceError.FAILED, "the stream failed"
    if isinstance(failure, SegmentationError):
        code, reason = REFUSALS.get(failure.code, (code, reason))
    return code, f"segmentation service: {reason}: {failure}"


def post_error(element: Gst.Element, code: Gst.ResourceError | Gst.StreamError, text: str) -> None:
    domain = (
        Gst.resource_error_quark()
        if isinstance(code, Gst.ResourceError)
        else Gst.stream_error_quark()
    )
    element.message_full(
        Gst.MessageType.ERROR, domain, int(code), text, text, __file__, "segmentation", 0
    )
