"""SIGTERM during open-loop traffic: every frame the server read is answered, each stream then
ends UNAVAILABLE saying the replica drains, and the process exits within its grace period."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass, field

import grpc
import pytest

from loadtest.local_server import ServerProcess
from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.api.servicer import DRAINING_DETAILS
from tests.photos import video_frame_jpeg

GRACE_S = 5.0


@dataclass
class StreamRecord:
    sent: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""


async def open_loop_stream(
    target: str, stream_id: str, fps: float, jpegs: list[bytes]
) -> StreamRecord:
    """Sends a frame every 1/fps s until the call ends, on the raw stub (no failover)."""
    record = StreamRecord()
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment()
        await call.write(pb.StreamSegmentRequest(config=pb.StreamConfig(stream_id=stream_id)))

        async def send() -> None:
            for frame_id in range(1 << 30):
                if call.done():
                    return
                frame = pb.Frame(frame_id=frame_id, jpeg=jpegs[frame_id % len(jpegs)])
                try:
                    await call.write(pb.StreamSegmentRequest(frame=frame))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    return
                record.sent.append(frame_id)
                await asyncio.sleep(1 / fps)

        sender = asyncio.create_task(send())
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
                record.answered.append(response.frame_id)
            record.code, record.details = await call.code(), await call.details()
        except grpc.aio.AioRpcError as error:
            record.code, record.details = error.code(), error.details()
        finally:
            sender.cancel()
    return record


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_traffic_answers_every_read_frame_then_ends_streams_draining(
    signal_number: int,
) -> None:
    server = ServerProcess(
        "--models", "selfie-general", "--engine", "tflite", "--shutdown-grace-s", str(GRACE_S)
    )
    jpegs = [video_frame_jpeg(640, 480, shift=4 * n) for n in range(8)]
    with server:
        streams = [
            asyncio.create_task(open_loop_stream(server.target, f"call-{n}", 30, jpegs))
            for n in range(4)
        ]
        await asyncio.sleep(1.5)
        signalled_at = time.monotonic()
        exit_code = await asyncio.to_thread(server.stop, signal_number, GRACE_S + 10)
        exited_after_s = time.monotonic() - signalled_at
        records = await asyncio.gather(*streams)

    assert exit_code == 0, server.output
    assert exited_after_s < GRACE_S + 3, f"exit took {exited_after_s:.1f} s"
    assert "shutting down" in server.output
    received, answered = map(
        int, re.search(r"(\d+) stream frames received, (\d+) answered", server.output).groups()
    )
    # Every frame the server read was answered, and the callers got each of those answers.
    assert received == answered == sum(len(record.answered) for record in records)
    for record in records:
        # The answers are a prefix of what was sent, in order; what follows is covered by the
        # status: UNAVAILABLE, draining, frames after the last answer not read.
        assert record.answered == record.sent[: len(record.answered)], record
        assert record.answered, "every stream was served before the signal"
        # grpcio's asyncio client may report a call the server ended while a frame was being
        # written as this INTERNAL instead of the server's status (grpc/grpc issue 36066); the
        # client library retries it like UNAVAILABLE. The server's own status is checked on
        # the streams that saw it: most of them.
        assert (record.code, record.details) in (
            (grpc.StatusCode.UNAVAILABLE, DRAINING_DETAILS),
            (grpc.StatusCode.INTERNAL, "Internal error from Core"),
        ), record
    draining = [r for r in records if r.code == grpc.StatusCode.UNAVAILABLE]
    assert len(draining) >= len(records) // 2, records
