"""The errors of the serving path. `api/status.py` alone maps them to gRPC statuses."""

from __future__ import annotations

from enum import StrEnum


class FrameErrorReason(StrEnum):
    """Why one frame was answered ERROR. Stable codes: clients and metrics labels use them."""

    EMPTY_FRAME = "empty_frame"
    FRAME_TOO_LARGE = "frame_too_large"  # more bytes than max_frame_bytes
    TOO_MANY_PIXELS = "too_many_pixels"  # the header claims more than max_frame_pixels
    CORRUPT_JPEG = "corrupt_jpeg"  # not a JPEG, truncated, or damaged
    UNSUPPORTED_JPEG = "unsupported_jpeg"  # a valid JPEG this service cannot decode (e.g. CMYK)
    INTERNAL = "internal"  # the model or the service failed; not the caller's fault


class FrameError(Exception):
    """One frame could not be segmented; the stream it came in goes on."""

    def __init__(self, reason: FrameErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class EngineFailure(Exception):
    """The engine failed, not the frames it was given: a broken device, a sticky CUDA error,
    device memory exhausted. A frame path raises it from `run_batch` for the whole batch; the
    batch runner counts these apart from bad frames, so that readiness can tell a broken
    replica from a bad frame. `recoverable=False`: this process cannot serve again (a lost
    CUDA context), and should end so that it is restarted."""

    def __init__(self, message: str, *, recoverable: bool = True) -> None:
        super().__init__(message)
        self.recoverable = recoverable


def internal_error(error: BaseException, what_failed: str = "internal error") -> FrameError:
    """The one way a bug or an engine failure becomes a frame's answer: INTERNAL, with the cause.

    A FrameError passes through unchanged: it already says what went wrong."""
    if isinstance(error, FrameError):
        return error
    return FrameError(FrameErrorReason.INTERNAL, f"{what_failed}: {error}")


class StreamProtocolError(Exception):
    """The caller broke the message order of a stream (INVALID_ARGUMENT)."""


class InvalidConfigError(Exception):
    """A stream or request configuration that cannot be served (INVALID_ARGUMENT)."""


class UnknownModelError(Exception):
    """A model name this replica has not loaded (NOT_FOUND)."""


class StreamReplacedError(Exception):
    """A newer stream with the same id took this one's place (ABORTED): the caller reopened it,
    here or elsewhere, so this one is a half-open leftover."""


class NotReadyError(Exception):
    """The server is not ready to serve yet (UNAVAILABLE): models are loading."""


class TooManyStreamsError(Exception):
    """The server has no room for another stream (RESOURCE_EXHAUSTED). `limit` names the limit
    that refused it: `max_streams` (the count), or `measured_load` (its engine at capacity, or
    frames dropped)."""

    def __init__(self, message: str, limit: str = "max_streams") -> None:
        super().__init__(message)
        self.limit = limit


class EngineFailingError(Exception):
    """The replica's engine has failed every batch for a while (UNAVAILABLE): its streams end,
    and new ones are refused, so that callers move to a replica that works."""


class ShuttingDownError(Exception):
    """The server is draining for shutdown: it takes no new streams, and ends each open one,
    once every frame it read is answered (UNAVAILABLE)."""


class StreamIdleError(Exception):
    """The caller sent nothing, or read no answers, for longer than the idle timeout
    (DEADLINE_EXCEEDED)."""
