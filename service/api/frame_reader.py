"""Reading a stream's messages: its config first, then its frames into the stream, and the
one idle cut-off for both (`idle.IdleWatch`): a caller that sends nothing, or reads nothing,
for `stream_idle_timeout_s` is cut off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from segmentation.v1 import segmentation_pb2 as pb
from service.api.idle import IdleWatch
from service.api.protocol import incoming_frame
from service.api.status import ANSWERED_ERRORS
from service.errors import StreamIdleError, StreamProtocolError, internal_error
from service.metrics import ModelMetrics
from service.streams.video_stream import VideoStream

# The call's own `read()` (grpc.aio's ServicerContext.read): the next message, or grpc.aio.EOF.
# Read directly, not through the request iterator, which wraps each read in an async generator.
Requests = Callable[[], Awaitable[object]]


def _idle_error(idle_s: float, answers_unread: int | None = None) -> StreamIdleError:
    if answers_unread is not None:
        return StreamIdleError(
            f"the caller read no answers for {idle_s:g} s ({answers_unread} waiting)"
        )
    return StreamIdleError(f"the stream sent nothing for {idle_s:g} s")


async def _read(requests: Requests) -> pb.StreamSegmentRequest | None:
    """The next message, None at the end."""
    try:
        message = await requests()
    except DecodeError as error:
        raise StreamProtocolError(
            f"a request could not be parsed as a StreamSegmentRequest: {error}"
        ) from None
    return None if message is grpc.aio.EOF else message


async def read_first(requests: Requests, idle_s: float) -> pb.StreamSegmentRequest | None:
    """The stream's first message, None if the caller closed without one."""
    idle = IdleWatch(idle_s)
    try:
        return await _read(requests)
    except asyncio.CancelledError:
        if not idle.expired:
            raise
        asyncio.current_task().uncancel()
        raise _idle_error(idle_s) from None
    finally:
        idle.close()


async def read_frames(
    requests: Requests, stream: VideoStream, metrics: ModelMetrics, idle_s: float
) -> None:
    """Reads the stream's frames into it until the caller ends its input. At its bound of
    unwritten answers the caller is not reading, so nothing more of it is read until it does.
    Every failure ends the stream's answers with a status (`stream.fail`)."""
    idle = IdleWatch(idle_s)
    waiting_for_the_caller_to_read = False
    try:
        while True:
            if not stream.has_room:
                waiting_for_the_caller_to_read = True
                await stream.wait_for_room()
                waiting_for_the_caller_to_read = False
                idle.progress()
            request = await _read(requests)
            idle.progress()
            if request is None:
                break
            frame = incoming_frame(request)
            metrics.observe_received(len(frame.jpeg))
            stream.submit(frame)
        stream.end_input()
    except asyncio.CancelledError:
        if not idle.expired:
            raise
        asyncio.current_task().uncancel()
        unread = stream.unwritten if waiting_for_the_caller_to_read else None
        stream.fail(_idle_error(idle_s, unread))
    except ANSWERED_ERRORS as error:  # the caller broke the protocol
        stream.fail(error)
    except Exception as error:  # the transport failing under the read: a status, not UNKNOWN
        stream.fail(internal_error(error, "reading the stream failed"))
    finally:
        idle.close()
