"""Newest-frame admission and answer order of one stream.

The pipeline is replaced by a segmenter whose frames finish when the test says, so that every
interleaving is chosen by the test; the real pipeline is exercised in test_calls_and_answers.py.
"""

from __future__ import annotations

import asyncio

import pytest

from service.errors import (
    FrameError,
    FrameErrorReason,
    StreamReplacedError,
    TooManyStreamsError,
)
from service.frames.codec import EncodedMask, MaskEncoding
from service.frames.requests import FrameTimings, SegmentedFrame
from service.streams.admission import AdmissionScheduler
from service.streams.answers import FrameOutcome, IncomingFrame
from service.streams.registry import StreamRegistry
from service.streams.stats import RecentStreamFigures
from service.streams.video_stream import VideoStream


class GatedSegmenter:
    """A stream's model handle whose frames finish when the test releases them (by JPEG
    bytes)."""

    model = "m"

    def __init__(self) -> None:
        self.closed = False
        self.gates: dict[bytes, asyncio.Future[None]] = {}
        self.started: list[bytes] = []
        self.cancelled: list[bytes] = []

    async def segment(self, jpeg: bytes, sequence: int) -> SegmentedFrame:
        self.started.append(jpeg)
        gate = self.gates.setdefault(jpeg, asyncio.get_running_loop().create_future())
        try:
            await gate
        except asyncio.CancelledError:
            self.cancelled.append(jpeg)
            raise
        if jpeg.startswith(b"bad"):
            raise FrameError(FrameErrorReason.CORRUPT_JPEG, "not a JPEG")
        return SegmentedFrame(EncodedMask(1, 1, MaskEncoding.RAW_U8, b"\xff"), 1, FrameTimings())

    def close(self) -> None:
        self.closed = True

    def release(self, jpeg: bytes) -> None:
        self.gates.setdefault(jpeg, asyncio.get_running_loop().create_future()).set_result(None)


def new_stream(segmenter: GatedSegmenter, max_in_flight: int, stream_id: str = "s") -> VideoStream:
    return VideoStream(stream_id, segmenter, max_in_flight, AdmissionScheduler(64))


def frame(n: int, prefix: bytes = b"f") -> IncomingFrame:
    return IncomingFrame(frame_id=n, capture_timestamp_us=1000 + n, jpeg=prefix + bytes([n]))


async def collect(stream: VideoStream) -> list[tuple[int, FrameOutcome]]:
    return [(answer.frame_id, answer.outcome) async for answer in stream.answers()]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_newer_frame_replaces_the_waiting_one_which_is_dropped() -> None:
    segmenter = GatedSegmenter()
    stream = new_stream(segmenter, 1)
    answers = asyncio.create_task(collect(stream))
    for n in range(4):
        stream.submit(frame(n))
    await settle()
    # Frame 0 runs; 1 and 2 were each replaced while waiting; 3 waits.
    assert segmenter.started == [b"f\x00"]
    segmenter.release(b"f\x00")
    await settle()
    assert segmenter.started == [b"f\x00", b"f\x03"]
    segmenter.release(b"f\x03")
    stream.end_input()
    assert await answers == [
        (0, FrameOutcome.OK),
        (1, FrameOutcome.DROPPED),
        (2, FrameOutcome.DROPPED),
        (3, FrameOutcome.OK),
    ]


async def test_answers_keep_frame_order_when_frames_finish_out_of_order() -> None:
    segmenter = GatedSegmenter()
    stream = new_stream(segmenter, 3)
    answers = asyncio.create_task(collect(stream))
    for n in range(3):
        stream.submit(frame(n))
    await settle()
    assert len(segmenter.started) == 3
    for jpeg in (b"f\x02", b"f\x01", b"f\x00"):
        segmenter.release(jpeg)
    stream.end_input()
    assert [n for n, _ in await answers] == [0, 1, 2]


async def test_a_failed_frame_is_answered_error_and_the_stream_goes_on() -> None:
    segmenter = GatedSegmenter()
    stream = new_stream(segmenter, 2)
    stream.submit(frame(0, b"bad"))
    stream.submit(frame(1))
    segmenter.release(b"bad\x00")
    segmenter.release(b"f\x01")
    stream.end_input()
    received = [answer async for answer in stream.answers()]
    assert [a.outcome for a in received] == [FrameOutcome.ERROR, FrameOutcome.OK]
    assert received[0].error.reason == FrameErrorReason.CORRUPT_JPEG
    assert received[1].capture_timestamp_us == 1001


async def test_fail_ends_the_answers_with_the_error() -> None:
    stream = new_stream(GatedSegmenter(), 1)
    answers = asyncio.create_task(collect(stream))
    await settle()
    stream.fail(RuntimeError("second config"))
    with pytest.raises(RuntimeError, match="second config"):
        await answers


async def test_close_cancels_the_frames_in_flight_and_forgets_the_waiting_one() -> None:
    segmenter = GatedSegmenter()
    stream = new_stream(segmenter, 1)
    stream.submit(frame(0))
    stream.submit(frame(1))
    await settle()
    await stream.close()
    assert segmenter.cancelled == [b"f\x00"]
    await settle()
    assert segmenter.started == [b"f\x00"]  # the waiting frame never starts


async def test_registry_assigns_ids_hands_a_reopened_id_over_and_forgets_closed_streams() -> None:
    registry = StreamRegistry(max_streams=2)

    def open_stream(stream_id: str) -> VideoStream:
        stream = new_stream(GatedSegmenter(), 1, registry.claim_id(stream_id))
        registry.add(stream)
        return stream

    named = open_stream("call-1")
    generated = open_stream("")
    assert generated.stream_id and generated.stream_id != "call-1"
    with pytest.raises(TooManyStreamsError):
        registry.claim_id("call-2")
    # At the limit, a reopened id still gets in: it takes the old stream's place.
    reopened = open_stream("call-1")
    with pytest.raises(StreamReplacedError, match="'call-1' was replaced"):
        async for _ in named.answers():
            pass
    await registry.close(named)  # the old stream's end leaves the new one registered
    assert {report.stream_id for report in registry.reports(())} == {"call-1", generated.stream_id}
    await registry.close(reopened)
    await registry.close(generated)
    assert len(registry) == 0


def test_stream_stats_report_the_recent_window() -> None:
    now = [0.0]
    stats = RecentStreamFigures(lambda: now[0])
    assert stats.frames_per_second() == 0.0 and stats.latency_quantiles((0.5,)) == {}
    for n in range(60):  # 30 FPS for 2 s, latency 10..69 ms
        now[0] = n / 30
        stats.record_ok(0.010 + n / 1000)
    now[0] = 2.0
    assert stats.frames_per_second() == pytest.approx(30.0)
    quantiles = stats.latency_quantiles((0.5, 0.99))
    assert quantiles[0.5] == pytest.approx(0.0395, abs=0.001)
    assert quantiles[0.99] == pytest.approx(0.069, abs=0.001)
    now[0] = 2.0 + RecentStreamFigures.WINDOW_S + 1  # nothing answered for longer than the window
    assert stats.frames_per_second() == 0.0 and stats.latency_quantiles((0.5,)) == {}
