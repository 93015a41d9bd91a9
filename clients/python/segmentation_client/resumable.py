"""One video stream that outlives its replica: reopened on drain or death, one answer per frame.

This module keeps the client contract (docs/client-contract.md, in the same words).
`ResumableStream` wraps the StreamSegment call the way google-api-core's `ResumableBidiRpc`
does: when the call ends with an error its reopen predicate accepts (`should_retry`: UNAVAILABLE,
RESOURCE_EXHAUSTED), or when frames were sent and no answer came for `answer_timeout_s` (a
replica that died without closing the connection), it reopens the call with the same config and
stream id, after a backoff (`RetryPolicy.backoff_s`, the one place that decides it). The
channel's load balancing picks the replica: another one behind a `dns:///` name, or the same one
once it is back. With `reopen_after_silence` (`should_retry_or_silence`), a stream the server
ended DEADLINE_EXCEEDED for silence reopens when the next frame comes, with no backoff.

The caller still gets exactly one answer per frame, in frame order: every frame sent to the
lost call and never answered, and every frame that arrives while no call is open, is answered
here, DROPPED with `error_reason` "reconnecting". Only when no replica has answered for
`give_up_after_s` does the stream raise SegmentationError.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable

import grpc

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client.retry import (
    ReopenPredicate,
    RetryPolicy,
    is_ended_while_writing,
    is_silence,
    should_retry,
)
from segmentation_client.values import Answer, FrameToSend, SegmentationError, StreamStats

RECONNECTING = "reconnecting"  # error_reason of the frames answered DROPPED by the client


class _AnswerTimeout(Exception):
    pass


_END = object()  # the caller's frames ended


class ResumableStream:
    """Use as `async for response in stream:`, or `async for answer in stream.answers():` for
    each response with its frame; `stats` counts reconnects and local drops.

    `should_reopen`: which ends of a call reopen it (`should_retry` by default)."""

    def __init__(
        self,
        open_call: Callable[[], grpc.aio.StreamStreamCall],
        config: pb.StreamConfig,
        frames: AsyncIterable[FrameToSend],
        policy: RetryPolicy,
        totals: StreamStats | None = None,
        should_reopen: ReopenPredicate = should_retry,
    ) -> None:
        self._open_call = open_call
        self._should_reopen = should_reopen
        self._config = pb.StreamConfig()
        self._config.CopyFrom(config)
        self._frames = frames
        self._policy = policy
        self._totals = totals  # the client's counters, summed over its streams
        self.stats = StreamStats()
        self._incoming: asyncio.Queue[FrameToSend | object] = asyncio.Queue()
        self._unanswered: deque[tuple[FrameToSend, float]] = deque()  # sent on this call; sent at
        self._frames_ended = False
        self._last_answer_at = 0.0
        self._frame_came = asyncio.Event()  # set by each frame (or the end) the caller hands in
        self._pump_ended = False

    async def __aiter__(self) -> AsyncIterator[pb.StreamSegmentResponse]:
        answers = self.answers()
        try:
            async for answer in answers:
                yield answer.response
        finally:
            await answers.aclose()  # leaving the loop early cancels the stream now, not at GC

    async def _pump(self) -> None:
        """The only reader of the caller's frames: a call that ends mid-read loses none."""
        try:
            async for frame in self._frames:
                self._incoming.put_nowait(frame)
                self._frame_came.set()
        finally:
            self._incoming.put_nowait(_END)
            self._pump_ended = True
            self._frame_came.set()

    async def answers(self) -> AsyncIterator[Answer]:
        """One Answer per frame, in frame order: the response with the frame it answers."""
        pump = asyncio.create_task(self._pump())
        attempt = 0
        lost_since: float | None = None  # no answer from any replica since then
        cause: str | None = None  # why the last call was lost, as the server said it
        try:
            while True:
                call = self._open_call()
                sender = asyncio.create_task(self._send(call))
                silent = False
                try:
                    async for answer in self._answers(call):
                        lost_since, attempt = None, 0
                        yield answer
                    # Ended OK: the caller's frames ended and every one was answered.
                    for frame, _ in self._unanswered:  # none, unless the server broke its word
                        yield self._drop_locally(frame)
                    self._unanswered.clear()
                    return
                except grpc.aio.AioRpcError as error:
                    if not self._should_reopen(error):
                        raise SegmentationError(error.code(), error.details() or "") from None
                    silent = is_silence(error)
                    if cause is None or not is_ended_while_writing(error):
                        cause = f"{error.code().name}: {error.details()}"
                except _AnswerTimeout:
                    cause = f"no answer for {self._policy.answer_timeout_s:g} s"
                finally:
                    sender.cancel()
                    call.cancel()  # a no-op once the call has ended
                    await asyncio.gather(sender, return_exceptions=True)
                # The frames the lost call never answered, in order, before any later frame.
                while self._unanswered:
                    yield self._drop_locally(self._unanswered.popleft()[0])
                if self._frames_ended and self._incoming.empty():
                    return
                if silent:
                    # The caller's silence, not a lost replica: reopen when a frame comes.
                    if not await self._next_frame_came():
                        return
                    self._count("reconnects")
                    continue
                now = time.monotonic()
                lost_since = lost_since if lost_since is not None else now
                if now - lost_since >= self._policy.give_up_after_s:
                    raise SegmentationError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"no replica answered stream {self._config.stream_id!r} for "
                        f"{now - lost_since:.1f} s; last: {cause}",
                    )
                self._count("reconnects")
                async for frame in self._frames_during(self._policy.backoff_s(attempt)):
                    yield self._drop_locally(frame)
                attempt += 1
                if self._frames_ended and self._incoming.empty():
                    return
        finally:
            failed = pump.done() and not pump.cancelled() and pump.exception()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if failed:
                raise failed  # the caller's own frames raised: theirs to see

    async def _next_frame_came(self) -> bool:
        """Waits for the caller's next frame; False when its frames ended instead."""
        if self._incoming.empty():
            self._frame_came.clear()
            await self._frame_came.wait()
        if self._pump_ended and self._incoming.qsize() == 1:  # what is left is the end
            self._frames_ended = True
            return False
        return True

    async def _send(self, call: grpc.aio.StreamStreamCall) -> None:
        """Writes the config, then each frame as it comes; a frame is unanswered from the
        moment it is taken, so that one the write loses is still answered."""
        try:
            await call.write(pb.StreamSegmentRequest(config=self._config))
            while (frame := await self._incoming.get()) is not _END:
                assert isinstance(frame, FrameToSend)
                self._unanswered.append((frame, time.monotonic()))
                # Stop writing once the call has ended (drained, failed): grpcio reports a write
                # into an ended call as INTERNAL instead of the server's status (grpc 36066).
                if call.done():
                    return
                await call.write(
                    pb.StreamSegmentRequest(
                        frame=pb.Frame(
                            frame_id=frame.frame_id,
                            capture_timestamp_us=frame.capture_timestamp_us,
                            jpeg=frame.jpeg,
                        )
                    )
                )
            self._frames_ended = True
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call ended; its reader reports how

    async def _answers(self, call: grpc.aio.StreamStreamCall) -> AsyncIterator[Answer]:
        """The call's answers, matched to the frames sent; raises _AnswerTimeout when frames
        wait for an answer longer than the policy allows."""
        timeout_s = self._policy.answer_timeout_s
        read: asyncio.Future[object] | None = None
        try:
            while True:
                read = asyncio.ensure_future(call.read())
                while not read.done():
                    waited_since = self._waited_since()
                    if waited_since is not None and time.monotonic() - waited_since >= timeout_s:
                        raise _AnswerTimeout()
                    # Wake up when the oldest unanswered frame would time out, or soon, since a
                    # frame may be sent meanwhile.
                    wait_s = timeout_s if waited_since is None else waited_since + timeout_s
                    wait_s = min(timeout_s / 4, max(0.0, wait_s - time.monotonic()))
                    await asyncio.wait({read}, timeout=max(wait_s, 0.001))
                response = read.result()
                read = None
                if response is grpc.aio.EOF:
                    return
                assert isinstance(response, pb.StreamSegmentResponse)
                self._last_answer_at = time.monotonic()
                if not self._config.stream_id:
                    self._config.stream_id = response.stream_id  # reopen under the same id
                # The server answers the frames it read in order: anything before this one was
                # not read by it (it cannot happen on one call, but keeps the count exact).
                while self._unanswered and self._unanswered[0][0].frame_id != response.frame_id:
                    yield self._drop_locally(self._unanswered.popleft()[0])
                frame = self._unanswered.popleft()[0] if self._unanswered else None
                yield Answer(frame, response)
        finally:
            if read is not None and not read.done():
                read.cancel()

    def _waited_since(self) -> float | None:
        """Since when the oldest unanswered frame has waited with no answer; None if none."""
        if not self._unanswered:
            return None
        return max(self._unanswered[0][1], self._last_answer_at)

    async def _frames_during(self, wait_s: float) -> AsyncIterator[FrameToSend]:
        """The frames that arrive while no call is open, for `wait_s` at most."""
        deadline = time.monotonic() + wait_s
        while (left_s := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(self._incoming.get(), left_s)
            except TimeoutError:
                return
            if frame is _END:
                self._frames_ended = True
                return
            assert isinstance(frame, FrameToSend)
            yield frame

    def _drop_locally(self, frame: FrameToSend) -> Answer:
        self._count("frames_dropped_locally")
        response = pb.StreamSegmentResponse(
            stream_id=self._config.stream_id,
            frame_id=frame.frame_id,
            capture_timestamp_us=frame.capture_timestamp_us,
            status=pb.StreamSegmentResponse.DROPPED,
            error_reason=RECONNECTING,
            error_code=pb.FRAME_ERROR_REASON_RECONNECTING,
            error_message="the stream's replica was lost; the client is reopening the stream",
        )
        return Answer(frame, response)

    def _count(self, name: str) -> None:
        for stats in (self.stats, self._totals):
            if stats is not None:
                setattr(stats, name, getattr(stats, name) + 1)
