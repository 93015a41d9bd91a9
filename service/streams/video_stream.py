"""Per-stream state: newest-frame admission and answers in frame order.

A live video wants its newest frame segmented, not a queue that grows. So a stream has at most
`max_in_flight` frames in the pipeline and one more waiting to enter it; a newer frame replaces
the waiting one, which is answered DROPPED at once. Every frame gets exactly one answer, and
answers leave in the order the frames came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from service.clock import Clock
from service.errors import FrameError, internal_error
from service.frames.requests import SegmentedFrame
from service.streams.admission import AdmissionScheduler
from service.streams.answers import FrameAnswer, FrameOutcome, IncomingFrame
from service.streams.stats import RecentStreamFigures

log = logging.getLogger(__name__)


class StreamHandle(Protocol):
    """The stream's place in its model's batches: what `frames.pipeline.StreamHandle` is to
    the stream (a test may hand in its own segmenter of that shape)."""

    model: str

    async def segment(self, jpeg: bytes, sequence: int) -> SegmentedFrame: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _UnwrittenFrame:
    """A frame read off the call, from its arrival (admitted or not) until its answer is
    written back: the stream's bound of unwritten answers counts these."""

    frame: IncomingFrame
    arrived_at: float
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
        handle: StreamHandle,
        max_in_flight: int,
        admission: AdmissionScheduler[VideoStream],
        clock: Clock = time.monotonic,
        max_unwritten: int = 1 << 30,
    ) -> None:
        self.stream_id = stream_id
        # The stream's place in its model's batches, with its smoothing state: it goes with it.
        self._handle = handle
        self.model = handle.model
        self._max_in_flight = max_in_flight
        self._admission = admission
        self._arrivals = 0
        self._clock = clock
        self._unwritten: deque[_UnwrittenFrame] = deque()  # in frame order
        self.max_unwritten = max_unwritten
        self._waiting: _UnwrittenFrame | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._input_ended = False
        self._failure: BaseException | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the stream's, once it runs
        # The writer's wake-up while it waits for an answer: a bare future, set once. An
        # asyncio.Event would cost a clear, a new future and a loop check for every answer.
        self._writer_waiting: asyncio.Future[None] | None = None
        self._room = asyncio.Event()  # the reader's wake-up: unwritten answers below the bound
        self._room.set()
        self.stats = RecentStreamFigures(clock)

    @property
    def frames_read(self) -> int:
        """Frames of the stream read off its call so far."""
        return self._arrivals

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
        self._arrivals += 1
        pending = _UnwrittenFrame(frame, now, self._arrivals)
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
        self._admission.admit(self)

    @property
    def can_start(self) -> bool:
        """Whether a frame is waiting that the stream's bound of frames in flight lets start."""
        return (
            not self._closed
            and self._waiting is not None
            and len(self._in_flight) < self._max_in_flight
        )

    def start_waiting_frame(self) -> None:
        """Starts the waiting frame, in room the admission scheduler took for it."""
        pending, self._waiting = self._waiting, None
        task = self._running_loop().create_task(self._process(pending))
        self._in_flight.add(task)
        task.add_done_callback(self._on_frame_done)

    def end_input(self) -> None:
        """The caller sends no more frames; answers end after the last one."""
        self._input_ended = True
        self._wake_writer()

    def fail(self, error: BaseException) -> None:
        """Ends the answers with `error` (a broken stream), raised by `answers()`."""
        self._failure = error
        self._wake_writer()

    def _answer(self, pending: _UnwrittenFrame, answer: FrameAnswer) -> None:
        if pending.answer is None and not self._closed:
            pending.answer = answer
            self._wake_writer()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _wake_writer(self) -> None:
        waiting = self._writer_waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

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
                # Nothing yields between the checks above and this wait: any change comes
                # while the writer waits, and wakes it.
                self._writer_waiting = self._running_loop().create_future()
                try:
                    await self._writer_waiting
                finally:
                    self._writer_waiting = None

    async def close(self) -> None:
        """Frees everything the stream holds; frames not yet answered are abandoned."""
        if not self._closed:
            self._handle.close()
        self._closed = True
        self._waiting = None
        self._admission.forget(self)
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._unwritten.clear()
        self._room.set()  # a reader held at the bound must not wait for ever

    def _on_frame_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._admission.frame_done()  # streams queued before this one go first
        self._admission.admit(self)

    async def _process(self, pending: _UnwrittenFrame) -> None:
        frame = pending.frame
        admission_wait_s = self._clock() - pending.arrived_at
        try:
            segmented = await self._handle.segment(frame.jpeg, pending.sequence)
            answer = FrameAnswer(
                frame.frame_id,
                frame.capture_timestamp_us,
                FrameOutcome.OK,
                segmented=segmented,
                admission_wait_s=admission_wait_s,
            )
        except Exception as error:  # a bug must cost one frame, not the stream
            if not isinstance(error, FrameError):
                log.exception("frame %d of stream %s failed", frame.frame_id, self.stream_id)
            answer = FrameAnswer(
                frame.frame_id,
                frame.capture_timestamp_us,
                FrameOutcome.ERROR,
                error=internal_error(error),
                admission_wait_s=admission_wait_s,
            )
        self._answer(pending, answer)
