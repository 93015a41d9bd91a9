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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from service.batching.batcher import Clock
from service.errors import FrameError, internal_error
from service.frames.pipeline import OutputRequest, SegmentedFrame, SmoothFrame
from service.frames.refine import TemporalSmoother
from service.streams.admission import FrameBudget
from service.streams.answers import FrameAnswer, FrameOutcome, IncomingFrame
from service.streams.stats import StreamStats

log = logging.getLogger(__name__)

Segmenter = Callable[[bytes, OutputRequest, SmoothFrame | None], Awaitable[SegmentedFrame]]


@dataclass(eq=False)
class _AdmittedFrame:
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
        model: str,
        mask: OutputRequest,
        segment: Segmenter,
        max_in_flight: int,
        budget: FrameBudget[VideoStream],
        smoothing_strength: float = 0.0,
        clock: Clock = time.monotonic,
        max_unwritten: int = 1 << 30,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.model = model
        self.mask = mask
        self._segment = segment
        self._max_in_flight = max_in_flight
        self._budget = budget
        # The previous mask lives with the stream and goes with it.
        self._smoother = TemporalSmoother(smoothing_strength) if smoothing_strength else None
        self._arrivals = 0
        self._clock = clock
        self._unwritten: deque[_AdmittedFrame] = deque()  # in frame order
        self.max_unwritten = max_unwritten
        self._waiting: _AdmittedFrame | None = None
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
        pending = _AdmittedFrame(frame, now, self._arrivals)
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

    def _start_waiting_frame(self) -> bool:
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
            self._start_waiting_frame()
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

    def _answer(self, pending: _AdmittedFrame, answer: FrameAnswer) -> None:
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

    def _start(self, pending: _AdmittedFrame) -> None:
        task = asyncio.create_task(self._process(pending))
        self._in_flight.add(task)
        task.add_done_callback(self._on_frame_done)

    def _on_frame_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._budget.give_back()
        # Streams queued before this one go first.
        while (queued := self._budget.take_for_next_queued()) is not None:
            if not queued._start_waiting_frame():
                self._budget.give_back()
        self._start_waiting_or_queue()

    async def _process(self, pending: _AdmittedFrame) -> None:
        frame = pending.frame
        admission_wait_s = self._clock() - pending.arrived_at
        try:
            smooth_frame = (
                functools.partial(self._smoother, sequence=pending.sequence)
                if self._smoother
                else None
            )
            segmented = await self._segment(frame.jpeg, self.mask, smooth_frame)
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
