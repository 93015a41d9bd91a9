"""A caller that stops reading its answers, beside callers that read: the server stops reading
the slow one at its bound of unwritten answers, serves the others meanwhile, and serves the
slow one again once it reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client import FrameToSend, SegmentationClient
from service.app import RunningService, running_server
from service.streams.video_stream import VideoStream
from tests.helpers import loopback_config
from tests.photos import video_frame_jpeg

OK = pb.StreamSegmentResponse.OK
DROPPED = pb.StreamSegmentResponse.DROPPED

BOUND = 6  # max_unwritten_answers_per_stream: small, so the stall reaches it at once
FRAME_INTERVAL_S = 1 / 30
# The slow caller reads nothing for SETTLE_S after it first reached the bound, and HOLD_S more
# (the stimulus, not an assertion).
SETTLE_S = 1.0
HOLD_S = 2.0
RESUMED_FRAMES = 30  # frames the slow caller sends once it reads again
# Answers the server handed to gRPC before the caller's HTTP/2 window filled left the stream's
# count, so as many more frames were read: about a dozen RAW masks of 300 kB (the window grows
# with gRPC's bandwidth probe). Without the bound the server reads every frame sent.
TRANSPORT_SLACK = 24


@dataclass
class Camera:
    """Frames at 30 FPS, sent as the transport takes them: a frame the call cannot take yet
    is late, and the camera does not catch up with a burst afterwards."""

    jpegs: list[bytes]
    sent: int = 0
    last: int | None = None  # the camera stops after this many frames, when set
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def frames(self) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stop.is_set() and (self.last is None or self.sent < self.last):
            yield self.sent
            self.sent += 1
            next_at = max(next_at + FRAME_INTERVAL_S, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), next_at - loop.time())

    def jpeg(self, frame_id: int) -> bytes:
        return self.jpegs[frame_id % len(self.jpegs)]


async def _normal_stream(
    client: SegmentationClient,
    camera: Camera,
    name: str,
    answers: list[pb.StreamSegmentResponse],
) -> None:
    """A caller that reads every answer, into `answers` as they come."""

    async def frames() -> AsyncIterator[FrameToSend]:
        async for frame_id in camera.frames():
            yield FrameToSend(frame_id, camera.jpeg(frame_id))

    async for response in client.stream(
        frames(), stream_id=name, mask_encoding=pb.MASK_ENCODING_RAW_U8
    ):
        answers.append(response)


async def _registered(service: RunningService, stream_id: str) -> VideoStream:
    # The server's own record of the stalled stream.
    for _ in range(2000):
        if (stream := service.streams.get(stream_id)) is not None:
            return stream
        await asyncio.sleep(0.005)
    raise AssertionError(f"stream {stream_id!r} never opened")


async def _each_served(
    answers: list[list[pb.StreamSegmentResponse]], since: list[int], ok_frames: int
) -> None:
    """Returns once each stream got `ok_frames` OK answers after its answer number `since`."""
    while any(  # noqa: ASYNC110 (other tasks append the answers: a poll reads them simply)
        sum(r.status == OK for r in stream_answers[start:]) < ok_frames
        for stream_answers, start in zip(answers, since, strict=True)
    ):
        await asyncio.sleep(0.01)


async def test_a_caller_that_stops_reading_is_held_at_the_bound_and_served_again() -> None:
    config = loopback_config(models=("selfie-general",), max_unwritten_answers_per_stream=BOUND)
    jpegs = [video_frame_jpeg(640, 480, shift=n * 7) for n in range(8)]
    async with (
        running_server(config) as service,
        SegmentationClient(service.target) as client,
        grpc.aio.insecure_channel(service.target) as channel,
    ):
        normal_cameras = [Camera(jpegs) for _ in range(2)]
        normal_answers: list[list[pb.StreamSegmentResponse]] = [[], []]
        normal = [
            asyncio.create_task(_normal_stream(client, camera, f"normal-{n}", answers))
            for n, (camera, answers) in enumerate(zip(normal_cameras, normal_answers, strict=True))
        ]

        slow = Camera(jpegs)

        async def slow_requests() -> AsyncIterator[pb.StreamSegmentRequest]:
            yield pb.StreamSegmentRequest(
                config=pb.StreamConfig(stream_id="slow", mask_encoding=pb.MASK_ENCODING_RAW_U8)
            )
            async for frame_id in slow.frames():
                yield pb.StreamSegmentRequest(
                    frame=pb.Frame(frame_id=frame_id, jpeg=slow.jpeg(frame_id))
                )

        # A raw call whose answers nobody reads until the stall ends.
        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment(slow_requests())
        stream = await _registered(service, "slow")

        # Sample the server's side of the slow stream often while it stalls.
        unwritten_seen: list[int] = []
        full = asyncio.Event()  # the slow stream reached its bound
        stalled = asyncio.Event()

        async def sample() -> None:
            while not stalled.is_set():
                unwritten_seen.append(stream.unwritten)
                if stream.unwritten >= BOUND:
                    full.set()
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        await asyncio.wait_for(full.wait(), 10.0)
        # The answers gRPC already took fill the transport windows; then nothing moves.
        await asyncio.sleep(SETTLE_S)
        read_after_settle = stream.frames_read  # frames of the slow stream read off the call
        normal_at_hold_start = [len(answers) for answers in normal_answers]
        # The hold lasts at least HOLD_S, and until the normal streams were served meanwhile
        # (each a third of the frames its camera made in HOLD_S): a slow machine only makes
        # the hold longer, never the test fail.
        hold_frames = round(HOLD_S / FRAME_INTERVAL_S)
        await asyncio.sleep(HOLD_S)
        await asyncio.wait_for(
            _each_served(normal_answers, normal_at_hold_start, hold_frames // 3), timeout=30.0
        )
        read_after_hold = stream.frames_read
        unwritten_after_hold = stream.unwritten
        normal_in_hold = [
            answers[start:]
            for answers, start in zip(normal_answers, normal_at_hold_start, strict=True)
        ]
        stalled.set()
        await sampler

        # The caller reads again, and its camera sends a second of new frames.
        sent_at_resume = slow.sent
        slow.last = sent_at_resume + RESUMED_FRAMES
        slow_answers = [response async for response in call]
        slow_code = await call.code()

        for camera in normal_cameras:
            camera.stop.set()
        await asyncio.gather(*normal)

    figures = (
        f"slow stream: {read_after_settle} frames read after settling, {read_after_hold} after "
        f"the hold; {sent_at_resume} handed to its call; most unwritten {max(unwritten_seen)}"
    )
    # The bound held at every sample, and the stall held the stream at it.
    assert max(unwritten_seen) <= BOUND, figures
    assert unwritten_after_hold == BOUND, figures
    # The server stopped reading the slow caller: no frame of it was read during the hold,
    # while its camera made 60 (without the bound the server reads every one of them), and
    # all it read is the bound plus the few answers its transport window took.
    assert read_after_hold - read_after_settle <= 1, figures
    assert read_after_hold <= BOUND + TRANSPORT_SLACK, figures

    # Once it reads, it is served again: one answer per frame sent, in order, new frames OK.
    assert slow_code == grpc.StatusCode.OK
    assert [r.frame_id for r in slow_answers] == list(range(slow.sent))
    assert {r.status for r in slow_answers} <= {OK, DROPPED}
    new_ok = [r for r in slow_answers[sent_at_resume:] if r.status == OK]
    assert len(new_ok) >= RESUMED_FRAMES // 3, f"{len(new_ok)} of the new frames were OK"
    assert slow_answers[-1].status == OK, "the newest frame is served"
    assert all(r.mask.width == 640 and len(r.mask.data) == 640 * 480 for r in new_ok)

    # The normal streams were served all along, the stall included.
    for n, answers in enumerate(normal_answers):
        assert [r.frame_id for r in answers] == list(range(normal_cameras[n].sent))
        assert {r.status for r in answers} <= {OK, DROPPED}
        ok_in_hold = sum(r.status == OK for r in normal_in_hold[n])
        assert ok_in_hold >= hold_frames // 3, f"normal-{n}: {ok_in_hold} OK in the hold"
    assert client.stream_stats.reconnects == 0
