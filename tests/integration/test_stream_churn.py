"""Streams opened, used and cancelled at random points leave nothing behind."""

from __future__ import annotations

import asyncio
import random
import urllib.request
from collections.abc import AsyncIterator

import grpc
import psutil

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.app import RunningService, running_server
from tests.helpers import loopback_config
from tests.photos import video_frame_jpeg

STREAMS = 1000
CONCURRENT = 25
WARM_UP_STREAMS = 100
RSS_GROWTH_BOUND_BYTES = 64 << 20
ENDINGS = ("before_config", "after_config", "mid_answers", "frames_in_flight", "complete")


async def one_stream(stub: pb_grpc.SegmentationServiceStub, rng: random.Random, n: int) -> str:
    ending = rng.choice(ENDINGS)
    jpegs = [video_frame_jpeg(320, 240, shift=rng.randrange(64)) for _ in range(3)]
    config_sent = asyncio.Event()

    async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
        yield pb.StreamSegmentRequest(config=pb.StreamConfig(stream_id=f"churn-{n}"))
        config_sent.set()
        if ending == "after_config":
            await asyncio.Event().wait()  # never sends a frame
        for frame_id, jpeg in enumerate(jpegs):
            yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=frame_id, jpeg=jpeg))

    call = stub.StreamSegment(requests())
    if ending == "before_config":
        call.cancel()
    elif ending == "after_config":
        await config_sent.wait()
        await asyncio.sleep(rng.uniform(0, 0.02))
        call.cancel()
    elif ending == "frames_in_flight":
        await asyncio.sleep(rng.uniform(0, 0.01))
        call.cancel()
    else:
        stop_after = 1 if ending == "mid_answers" else len(jpegs)
        received = 0
        async for _ in call:
            received += 1
            if received == stop_after:
                break
        call.cancel()
    await call.code()  # the call has ended, on both sides
    return ending


async def churn(service: RunningService, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    endings: dict[str, int] = {}
    limit = asyncio.Semaphore(CONCURRENT)
    async with grpc.aio.insecure_channel(service.target) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)

        async def limited(n: int) -> None:
            async with limit:
                ending = await one_stream(stub, rng, n)
                endings[ending] = endings.get(ending, 0) + 1

        await asyncio.gather(*(limited(seed * count + n) for n in range(count)))
    return endings


def stream_series(service: RunningService) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics") as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if 'stream="' in line]


async def wait_until_no_streams(service: RunningService) -> None:
    for _ in range(100):
        if len(service.streams) == 0:
            return
        await asyncio.sleep(0.05)


async def test_a_thousand_streams_cancelled_at_random_points_leave_nothing_behind() -> None:
    config = loopback_config(models=("selfie-general",), metrics_port=0)
    process = psutil.Process()
    async with running_server(config) as service:
        await churn(service, WARM_UP_STREAMS, seed=1)
        await wait_until_no_streams(service)
        rss_before = process.memory_info().rss
        endings = await churn(service, STREAMS, seed=2)
        await wait_until_no_streams(service)
        rss_after = process.memory_info().rss

        print(
            f"\n{STREAMS} streams {endings}; resident memory {rss_before / 2**20:.0f} MiB -> "
            f"{rss_after / 2**20:.0f} MiB ({(rss_after - rss_before) / 2**20:+.1f} MiB, "
            f"bound {RSS_GROWTH_BOUND_BYTES >> 20} MiB)"
        )
        assert sum(endings.values()) == STREAMS and set(endings) == set(ENDINGS)
        assert len(service.streams) == 0
        assert service.admission.in_flight == 0, "every frame gave its room back"
        assert all(p.batch_runner.frames_waiting == 0 and p.batch_runner.batches_in_flight == 0
                   for p in service.pipelines.values())  # fmt: skip
        assert await asyncio.to_thread(stream_series, service) == []
        assert service.metrics.active_streams.labels("selfie-general")._value.get() == 0
        assert rss_after - rss_before < RSS_GROWTH_BOUND_BYTES
