"""Metrics as operations see them: a real Prometheus scraping the real server."""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient
from service.app import RunningService, running_server
from tests.helpers import loopback_config
from tests.photos import video_frame_jpeg
from tests.prometheus import query, scalar, scrape_target

STREAMS = 4
FPS = 20
RUN_S = 8.0


async def open_loop_stream(
    client: SegmentationClient, stream_id: str, fps: float, seconds: float
) -> list[tuple[float, pb.StreamSegmentResponse]]:
    """Sends at `fps` on schedule; returns (answered at, response) for every frame."""
    jpegs = [video_frame_jpeg(640, 480, shift=4 * n) for n in range(8)]
    count = int(fps * seconds)

    async def frames() -> AsyncIterator[FrameToSend]:
        started = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / fps - time.monotonic()))
            yield FrameToSend(n, jpegs[n % len(jpegs)])

    return [
        (time.monotonic(), response)
        async for response in client.stream(frames(), stream_id=stream_id)
    ]


async def test_prometheus_sees_what_the_streams_sent_and_measured(prometheus) -> None:
    prometheus_url, prometheus_config = prometheus
    config = loopback_config(models=("selfie-general",), metrics_port=0)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        scrape_target(prometheus_url, prometheus_config, service.metrics_port)
        await asyncio.sleep(2.0)  # a couple of scrapes before the traffic
        streams = asyncio.gather(
            *(open_loop_stream(client, f"call-{n}", FPS, RUN_S) for n in range(STREAMS))
        )
        await asyncio.sleep(RUN_S - 1.5)
        # Mid-run, from Prometheus: streams open and frames per second.
        active = await asyncio.to_thread(scalar, prometheus_url, "sum(segmentation_active_streams)")
        fps = await asyncio.to_thread(
            scalar, prometheus_url, 'sum(rate(segmentation_frames_total{outcome="ok"}[3s]))'
        )
        per_stream = await asyncio.to_thread(
            query, prometheus_url, "segmentation_stream_frames_per_second"
        )
        results = await streams
        await asyncio.sleep(2.5)  # scrapes after the streams ended

        responses = [response for result in results for _, response in result]
        ok = [r for r in responses if r.status == pb.StreamSegmentResponse.OK]
        assert len(responses) == STREAMS * int(FPS * RUN_S)
        assert len(ok) >= 0.95 * len(responses)

        assert active == STREAMS
        assert fps == pytest.approx(STREAMS * FPS, rel=0.25)
        assert sorted(s["metric"]["stream"] for s in per_stream) == [
            f"call-{n}" for n in range(STREAMS)
        ]
        for series in per_stream:
            assert float(series["value"][1]) == pytest.approx(FPS, rel=0.3)

        # Totals: every OK frame ran in exactly one batch.
        frames_run = await asyncio.to_thread(
            scalar, prometheus_url, "sum(segmentation_batch_size_sum)"
        )
        batches = await asyncio.to_thread(
            scalar, prometheus_url, "sum(segmentation_batch_size_count)"
        )
        assert frames_run == len(ok)
        # A batch of b frames answers b frames that each say b: it counts 1/b per frame.
        assert batches == pytest.approx(sum(1 / r.batch_size for r in ok), abs=0.01)

        # Latency quantiles: Prometheus's estimate from the buckets agrees with the servers'
        # own per-frame timings to within the width of the bucket the true value falls in.
        measured_ms = [r.timings.total_ms for r in ok]
        for quantile in (0.5, 0.95):
            estimate_s = await asyncio.to_thread(
                scalar,
                prometheus_url,
                f"histogram_quantile({quantile}, "
                "sum by (le) (increase(segmentation_frame_latency_seconds_bucket[1m])))",
            )
            true_ms = statistics.quantiles(measured_ms, n=100)[round(quantile * 100) - 1]
            assert estimate_s * 1e3 == pytest.approx(true_ms, rel=0.5, abs=2.0), quantile

        assert (
            await asyncio.to_thread(query, prometheus_url, "segmentation_stream_frames_per_second")
            == []
        )
        assert (
            await asyncio.to_thread(scalar, prometheus_url, "sum(segmentation_active_streams)") == 0
        )


def stream_series(service: RunningService) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics") as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def test_per_stream_series_are_capped_and_removed_with_their_streams() -> None:
    config = loopback_config(models=("selfie-general",), metrics_port=0, max_stream_series=3)
    release = asyncio.Event()
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        answered = [asyncio.Event() for _ in range(5)]

        async def hold_open(n: int) -> None:
            async def frames() -> AsyncIterator[FrameToSend]:
                yield FrameToSend(0, video_frame_jpeg(640, 480))
                await release.wait()

            async for _ in client.stream(frames(), stream_id=f"call-{n}"):
                answered[n].set()

        holders = [asyncio.create_task(hold_open(n)) for n in range(5)]
        await asyncio.gather(*(event.wait() for event in answered))
        families = await asyncio.to_thread(stream_series, service)
        fps_series = families["segmentation_stream_frames_per_second"]
        assert len(fps_series) == 3
        assert {s.labels["stream"] for s in fps_series} <= {f"call-{n}" for n in range(5)}
        assert families["segmentation_streams_unreported"][0].value == 2
        latency = families["segmentation_stream_latency_seconds"]
        assert len(latency) == 3 * 3  # three quantiles of each reported stream
        release.set()
        await asyncio.gather(*holders)
        families = await asyncio.to_thread(stream_series, service)
        assert families["segmentation_stream_frames_per_second"] == []
        assert families["segmentation_stream_latency_seconds"] == []
        assert families["segmentation_streams_unreported"][0].value == 0
