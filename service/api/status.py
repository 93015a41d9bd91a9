"""The one mapping from the service's errors to the status a call ends with."""

from __future__ import annotations

import grpc

from service.errors import (
    EngineFailingError,
    FrameError,
    FrameErrorReason,
    InvalidConfigError,
    NotReadyError,
    ShuttingDownError,
    StreamIdleError,
    StreamProtocolError,
    StreamReplacedError,
    TooManyStreamsError,
    UnknownModelError,
)

_STATUS_OF_ERROR: dict[type[Exception], grpc.StatusCode] = {
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    EngineFailingError: grpc.StatusCode.UNAVAILABLE,
    TooManyStreamsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StreamIdleError: grpc.StatusCode.DEADLINE_EXCEEDED,
    StreamProtocolError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModelError: grpc.StatusCode.NOT_FOUND,
    StreamReplacedError: grpc.StatusCode.ABORTED,
}
# The errors a call ends with a status for. Anything else is a bug: the servicer turns it into
# an INTERNAL FrameError first (`errors.internal_error`), so no call ends UNKNOWN.
ANSWERED_ERRORS = (FrameError, *_STATUS_OF_ERROR)

# How a stream open at SIGTERM ends, once every frame read from it is answered: the caller
# learns at once, and the frames it sent after its last answer are exactly the unread ones.
DRAINING_DETAILS = (
    "the server is draining for shutdown; reopen the stream on another replica: "
    "frames after the last answer were not read"
)


def status_of(error: Exception) -> grpc.StatusCode:
    if isinstance(error, FrameError):
        if error.reason == FrameErrorReason.INTERNAL:
            return grpc.StatusCode.INTERNAL
        return grpc.StatusCode.INVALID_ARGUMENT
    return _STATUS_OF_ERROR[type(error)]
