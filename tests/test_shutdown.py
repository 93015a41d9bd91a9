"""SIGTERM during traffic: frames already received are answered, then the process exits within
its grace period."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator

import pytest

from loadtest.local_server import ServerProcess
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient, SegmentationError
from tests.photos import video_frame_jpeg

GRACE_S = 5.0


async def live_stream(
    target: str, stream_id: str, fps: float, stop_sending: asyncio.Event
) -> list[pb.StreamSegmentResponse]:
    jpegs = [video_frame_jpeg(640, 480, shift=4 * n) for n in range(8)]

    async def frames() -> AsyncIterator[FrameToSend]:
        frame_id = 0
        while not stop_sending.is_set():
            yield FrameToSend(frame_id, jpegs[frame_id % len(jpegs)])
            frame_id += 1
            await asyncio.sleep(1 / fps)

    async with SegmentationClient(target) as client:
        return [response async for response in client.stream(frames(), stream_id=stream_id)]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_traffic_answers_every_received_frame_then_exits(
    signal_number: int,
) -> None:
    server = ServerProcess("--models", "selfie-general", "--shutdown-grace-s", str(GRACE_S))
    with server:
        stop_sending = asyncio.Event()
        streams = [
            asyncio.create_task(live_stream(server.target, f"call-{n}", 30, stop_sending))
            for n in range(4)
        ]
        await asyncio.sleep(1.5)
        signalled_at = time.monotonic()
        exit_code = await asyncio.to_thread(server.stop, signal_number, GRACE_S + 10)
        exited_after_s = time.monotonic() - signalled_at
        stop_sending.set()
        results = await asyncio.gather(*streams, return_exceptions=True)

    assert exit_code == 0, server.output
    assert exited_after_s < GRACE_S + 3, f"exit took {exited_after_s:.1f} s"
    assert "shutting down" in server.output
    received, answered = map(
        int, re.search(r"(\d+) stream frames received, (\d+) answered", server.output).groups()
    )
    assert received == answered and received > 4 * 30
    for responses in results:
        # Each stream ended cleanly (status OK) with its frames answered in order, no gaps.
        assert not isinstance(responses, SegmentationError), responses
        assert [r.frame_id for r in responses] == list(range(len(responses)))
        assert len(responses) > 30
    assert sum(len(responses) for responses in results) == answered
