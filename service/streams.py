"""Per-stream state: newest-frame admission and answers in frame order.

A live video wants its newest frame segmented, not a queue that grows. So a stream has at most
`max_in_flight` frames in the pipeline and one more waiting to enter it; a newer frame replaces
the waiting one, which is answered DROPPED at once. Every frame gets exactly one answer, and
answers leave in the order the frames came.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from service.batcher import Clock
from service.errors import (
    FrameError,
    FrameErrorReason,
    StreamReplacedError,
    TooManyStreamsError,
)
from service.metrics import StreamReport
from service.pipeline import MaskRequest, SegmentedFrame, Smoothing
from service.refine import TemporalSmoother

log = logging.getLogger(__name__)

Segmenter = Callable[[bytes, MaskRequest, Smoothing | None], Awaitable[SegmentedFrame]]


class FrameOutcome(StrEnum):
    OK = "ok"
    DROPPED = "dropped"
    ERROR = "error"


@dataclass(frozen=True)
class IncomingFrame:
    frame_id: int
    capture_timestamp_us: int
    jpeg: bytes
    received_at: float | None = None  # when its message was read off the call, on the clock


@dataclass(frozen=True)
class FrameAnswer:
    frame_id: int
    capture_timestamp_us: int
    outcome: FrameOutcome
    segmented: SegmentedFrame | None = None  # set when OK
    error: FrameError | None = None  # set when ERROR
    receive_s: float = 0.0  # from the message being read to the frame's admission
    admission_wait_s: float = 0.0  # waiting behind the stream's frames in flight

    @property
    def total_s(self) -> float | None:
        """Server time from the frame's arrival to its answer, for OK frames."""
        if self.segmented is None:
            return None
        return self.receive_s + self.admission_wait_s + self.segmented.timings.total_s


class StreamStats:
    """Recent OK answers of one stream, for its per-stream metrics.

    Written on the event loop, read by the metrics thread: readers take a snapshot.
    """

    WINDOW_S = 5.0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._opened_at = clock()
        self._recent: deque[tuple[float, float]] = deque()  # (answered at, latency)

    def record_ok(self, latency_s: float) -> None:
        now = self._clock()
        self._recent.append((now, latency_s))
        while self._recent and self._recent[0][0] < now - self.WINDOW_S:
            self._recent.popleft()

    def frames_per_second(self) -> float:
        now = self._clock()
        answered = [t for t, _ in list(self._recent) if t >= now - self.WINDOW_S]
        span = min(self.WINDOW_S, now - self._opened_at)
        return len(answered) / span if span > 0 else 0.0

    def latency_quantiles(self, quantiles: tuple[float, ...]) -> dict[float, float]:
        now = self._clock()
        latencies = [latency for t, latency in list(self._recent) if t >= now - self.WINDOW_S]
        if not latencies:
            return {}
        values = np.quantile(latencies, quantiles)
        return {q: float(v) for q, v in zip(quantiles, values, strict=True)}


class FrameBudget:
    """The frames in flight across all streams, at most `max_frames_in_flight` at once.

    A frame that finds no room waits in its stream's slot (where a newer frame replaces it,
    as always), and its stream queues here; each frame that finishes hands its room to the
    stream that queued first. So an overloaded server drops stale frames evenly across
    streams instead of growing a queue.
    """

    def __init__(self, max_frames_in_flight: int) -> None:
        self.max_frames_in_flight = max_frames_in_flight
        self.in_flight = 0
        self._queued: deque[VideoStream] = deque()

    def try_take(self) -> bool:
        if self.in_flight < self.max_frames_in_flight and not self._queued:
            self.in_flight += 1
            return True
        return False

    def queue(self, stream: VideoStream) -> None:
        if stream not in self._queued:
            self._queued.append(stream)

    def forget(self, stream: VideoStream) -> None:
        if stream in self._queued:
            self._queued.remove(stream)

    def give_back(self) -> None:
        self.in_flight -= 1
        while self._queued and self.in_flight < self.max_frames_in_flight:
            stream = self._queued.popleft()
            if stream.start_waiting_frame():
                self.in_flight += 1


@dataclass(eq=False)
class _PendingFrame:
    frame: IncomingFrame
    arrived_at: float
    receive_s: float
    sequence: int  # arrival order within the stream
    answer: FrameAnswer | None = None  # set once, when the frame is answered


class VideoStream:
    """One video stream's frames, from admission to their answers in frame order.

    Frames read but not yet written back (in the pipeline, waiting, or answered and queued for
    the writer) are at most `max_unwritten`: `wait_for_room()` holds the reader at the bound,
    so a caller that stops reading stops being read, HTTP/2 flow control pushes back on its
    sends, and the server keeps nothing more of it.
    """

    def __init__(
        self,
        stream_id: str,
        model: str,
        mask: MaskRequest,
        segment: Segmenter,
        max_in_flight: int,
        budget: FrameBudget | None = None,
        smoothing: float = 0.0,
        clock: Clock = time.monotonic,
        max_unwritten: int = 1 << 30,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.model = model
        self.mask = mask
        self._segment = segment
        self._max_in_flight = max_in_flight
        self._budget = budget or FrameBudget(max_in_flight)
        # The previous mask lives with the stream and goes with it.
        self._smoother = TemporalSmoother(smoothing) if smoothing else None
        self._arrivals = 0
        self._clock = clock
        self._unwritten: deque[_PendingFrame] = deque()  # in frame order
        self.max_unwritten = max_unwritten
        self._waiting: _PendingFrame | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._input_ended = False
        self._failure: BaseException | None = None
        self._closed = False
        self._answers_changed = asyncio.Event()  # the writer's wake-up
        self._room = asyncio.Event()  # the reader's wake-up: unwritten answers below the bound
        self._room.set()
        self._on_close = on_close
        self.stats = StreamStats(clock)

    @property
    def frames_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def has_waiting_frame(self) -> bool:
        return self._waiting is not None

    @property
    def unwritten(self) -> int:
        """Frames read and not yet answered back to the caller."""
        return len(self._unwritten)

    @property
    def has_room(self) -> bool:
        """Whether the stream may read another frame (below its bound of unwritten answers)."""
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        """Returns once the stream may read another frame (its unwritten answers are below
        the bound)."""
        await self._room.wait()

    def submit(self, frame: IncomingFrame) -> None:
        """Admits a frame: starts it, or makes it the waiting one (dropping the one before)."""
        now = self._clock()
        receive_s = now - frame.received_at if frame.received_at is not None else 0.0
        self._arrivals += 1
        pending = _PendingFrame(frame, now, receive_s, self._arrivals)
        self._unwritten.append(pending)
        if len(self._unwritten) >= self.max_unwritten:
            self._room.clear()
        if self._waiting is not None:
            replaced = self._waiting.frame
            self._answer(
                self._waiting,
                FrameAnswer(replaced.frame_id, replaced.capture_timestamp_us, FrameOutcome.DROPPED),
            )
        self._waiting = pending
        self._start_waiting_or_queue()

    def start_waiting_frame(self) -> bool:
        """Starts the waiting frame in room the budget already took; False if none can start."""
        if self._closed or self._waiting is None or len(self._in_flight) >= self._max_in_flight:
            return False
        pending, self._waiting = self._waiting, None
        self._start(pending)
        return True

    def _start_waiting_or_queue(self) -> None:
        if self._closed or self._waiting is None or len(self._in_flight) >= self._max_in_flight:
            return
        if self._budget.try_take():
            self.start_waiting_frame()
        else:
            self._budget.queue(self)

    def end_input(self) -> None:
        """The caller sends no more frames; answers end after the last one."""
        self._input_ended = True
        self._answers_changed.set()

    def fail(self, error: BaseException) -> None:
        """Ends the answers with `error` (a broken stream), raised by `answers()`."""
        self._failure = error
        self._answers_changed.set()

    def _answer(self, pending: _PendingFrame, answer: FrameAnswer) -> None:
        if pending.answer is None and not self._closed:
            pending.answer = answer
            self._answers_changed.set()

    async def answers(self) -> AsyncIterator[FrameAnswer]:
        """Every frame's answer, in frame order, until the input ends and all are answered.

        An answer counts as unwritten until the consumer asks for the next one, that is
        until the caller's transport took it."""
        unwritten = self._unwritten
        while True:
            if self._failure is not None:
                raise self._failure
            if unwritten and unwritten[0].answer is not None:
                answer = unwritten[0].answer
                if answer.total_s is not None:
                    self.stats.record_ok(answer.total_s)
                yield answer
                if unwritten:  # close() empties it while the writer waits
                    unwritten.popleft()
                if len(unwritten) < self.max_unwritten:
                    self._room.set()
            elif not unwritten and self._input_ended:
                return
            else:
                self._answers_changed.clear()
                await self._answers_changed.wait()

    async def close(self) -> None:
        """Frees everything the stream holds; frames not yet answered are abandoned."""
        if self._on_close is not None and not self._closed:
            self._on_close()
        self._closed = True
        self._waiting = None
        self._budget.forget(self)
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._unwritten.clear()
        self._room.set()  # a reader held at the bound must not wait for ever

    def _start(self, pending: _PendingFrame) -> None:
        task = asyncio.create_task(self._process(pending))
        self._in_flight.add(task)
        task.add_done_callback(self._on_frame_done)

    def _on_frame_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._budget.give_back()  # streams queued before this one go first
        self._start_waiting_or_queue()

    async def _process(self, pending: _PendingFrame) -> None:
        frame = pending.frame
        admission_wait_s = self._clock() - pending.arrived_at
        try:
            smooth = (
                functools.partial(self._smoother, sequence=pending.sequence)
                if self._smoother
                else None
            )
            segmented = await self._segment(frame.jpeg, self.mask, smooth)
            answer = FrameAnswer(
                frame.frame_id,
                frame.capture_timestamp_us,
                FrameOutcome.OK,
                segmented=segmented,
                receive_s=pending.receive_s,
                admission_wait_s=admission_wait_s,
            )
        except FrameError as error:
            answer = FrameAnswer(
                frame.frame_id,
                frame.capture_timestamp_us,
                FrameOutcome.ERROR,
                error=error,
                receive_s=pending.receive_s,
                admission_wait_s=admission_wait_s,
            )
        except Exception as error:  # a bug must cost one frame, not the stream
            log.exception("frame %d of stream %s failed", frame.frame_id, self.stream_id)
            answer = FrameAnswer(
                frame.frame_id,
                frame.capture_timestamp_us,
                FrameOutcome.ERROR,
                error=FrameError(FrameErrorReason.INTERNAL, f"internal error: {error}"),
                receive_s=pending.receive_s,
                admission_wait_s=admission_wait_s,
            )
        self._answer(pending, answer)


class StreamRegistry:
    """The open streams of this replica, by id, at most `max_streams` of them."""

    def __init__(self, max_streams: int = 1 << 30) -> None:
        self.max_streams = max_streams
        self._streams: dict[str, VideoStream] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def open(self, stream_id: str, create: Callable[[str], VideoStream]) -> VideoStream:
        """Registers a new stream; an empty id gets a fresh one.

        A stream that reopens with the id of one still open here takes the id over, and the old
        one ends (StreamReplacedError): a caller only reopens a stream it has lost, so the old
        one is a half-open leftover, and it must not lock the caller out until it times out.
        """
        stream_id = stream_id or uuid.uuid4().hex
        replaced = self._streams.get(stream_id)
        if replaced is None and len(self._streams) >= self.max_streams:
            raise TooManyStreamsError(
                f"this server holds {len(self._streams)} streams, its limit; "
                "retry on another replica or later"
            )
        stream = create(stream_id)
        if replaced is not None:
            replaced.fail(
                StreamReplacedError(
                    f"stream {stream_id!r} was replaced by a newer stream with the same id"
                )
            )
        self._streams[stream_id] = stream
        self._empty.clear()
        return stream

    def reports(self, quantiles: tuple[float, ...]) -> list[StreamReport]:
        """Per-stream figures of the open streams, oldest first (read by the metrics thread)."""
        return [
            StreamReport(
                stream.stream_id,
                stream.model,
                stream.stats.frames_per_second(),
                stream.stats.latency_quantiles(quantiles),
            )
            for stream in list(self._streams.values())
        ]

    async def close(self, stream: VideoStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            if not self._streams:
                self._empty.set()
        await stream.close()

    async def wait_until_empty(self) -> None:
        await self._empty.wait()
