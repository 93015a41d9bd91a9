"""What several test modules share that is not a fixture: the loopback config, a clock moved by
hand, ways of streaming frames through a client, waiting for a condition, and a health check.
Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

# ENGINE_INDEPENDENT lives here so that modules can import it without importing conftest.
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient
from service.config import ServiceConfig


def loopback_config(**overrides: object) -> ServiceConfig:
    """The default config on a free loopback port, metrics off, with the TFLite engine unless
    the test asks for another. No SEGMENTATION_* variable of the shell reaches it."""
    return ServiceConfig(
        **{"address": "127.0.0.1:0", "metrics_port": -1, "engine": "tflite", **overrides}
    )


# For tests whose subject does not depend on the engine (protocol, input handling, what is
# done to a mask after the model): they run against the shared TFLite server only.
ENGINE_INDEPENDENT = pytest.mark.parametrize("server", ["tflite"], indirect=True)


# What a failover may cost a stream, in frames answered without a mask: at 30 FPS, a third of a
# second (the client's resumable stream, and the GStreamer element on it).
MAX_FRAMES_WITHOUT_MASK = 10


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def closed_loop_stream(
    client: SegmentationClient, jpegs: Sequence[bytes], window: int = 2, **options: object
) -> list[pb.StreamSegmentResponse]:
    """Sends each frame as soon as fewer than `window` frames are unanswered."""
    room = asyncio.Semaphore(window)

    async def frames() -> AsyncIterator[FrameToSend]:
        for frame_id, jpeg in enumerate(jpegs):
            await room.acquire()
            yield FrameToSend(frame_id, jpeg, capture_timestamp_us=frame_id * 33_333)

    responses = []
    async for response in client.stream(frames(), **options):
        responses.append(response)
        room.release()
    return responses


async def burst_stream(
    client: SegmentationClient, jpegs: Sequence[bytes], **options: object
) -> list[pb.StreamSegmentResponse]:
    """Sends every frame at once, without waiting for answers."""

    async def frames() -> AsyncIterator[FrameToSend]:
        for frame_id, jpeg in enumerate(jpegs):
            yield FrameToSend(frame_id, jpeg)

    return [response async for response in client.stream(frames(), **options)]


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 60.0,
    what: str | Callable[[], str] = "",
) -> float:
    """Seconds until `condition()` holds (polled while the event loop runs on); fails, naming
    `what` (or what it says at the timeout, a callable), if it does not within `timeout_s`."""
    started = time.monotonic()
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout_s:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {said or condition}")
        await asyncio.sleep(0.01)


async def health_status(target: str, service: str = "") -> int:
    """The server's gRPC health answer for `service` ("" for the whole server: readiness)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return response.status
