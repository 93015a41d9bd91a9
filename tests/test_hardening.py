"""Overload, deadlines, transport limits, idle streams and engine faults on the real server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient, SegmentationError
from segmentation_client.client import KEEPALIVE_TIME_S
from service.app import RunningService, running_server
from service.codec import JpegCodec
from service.errors import FrameError, FrameErrorReason
from tests.conftest import loopback_config
from tests.photos import astronaut_jpeg, astronaut_rgb, encode_jpeg, video_frame_jpeg
from tests.test_server import burst_stream, closed_loop_stream

OK = pb.StreamSegmentResponse.OK
DROPPED = pb.StreamSegmentResponse.DROPPED
ERROR = pb.StreamSegmentResponse.ERROR


async def test_streams_over_the_limit_are_refused_and_the_accepted_ones_fully_served() -> None:
    config = loopback_config(models=("selfie-general",), max_streams=3)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        opened = [asyncio.Event() for _ in range(3)]
        release = asyncio.Event()
        jpegs = [video_frame_jpeg(640, 480, shift=n) for n in range(10)]

        async def accepted(n: int) -> list[pb.StreamSegmentResponse]:
            async def frames() -> AsyncIterator[FrameToSend]:
                yield FrameToSend(0, jpegs[0])
                await release.wait()
                for frame_id in range(1, len(jpegs)):
                    yield FrameToSend(frame_id, jpegs[frame_id])
                    await asyncio.sleep(0.01)

            responses = []
            async for response in client.stream(frames(), stream_id=f"call-{n}"):
                responses.append(response)
                opened[n].set()
            return responses

        holders = [asyncio.create_task(accepted(n)) for n in range(3)]
        await asyncio.gather(*(event.wait() for event in opened))
        # The client retries RESOURCE_EXHAUSTED (another replica may have room), answering the
        # frame itself meanwhile, and gives up once no replica answered for its give-up time.
        impatient = SegmentationClient(
            service.target, retry_policy=RetryPolicy(give_up_after_s=0.3)
        )

        async def camera() -> AsyncIterator[FrameToSend]:
            for frame_id in range(1 << 30):
                yield FrameToSend(frame_id, jpegs[0])
                await asyncio.sleep(0.02)

        async with impatient:
            answered = []
            with pytest.raises(SegmentationError) as caught:
                async for response in impatient.stream(camera(), stream_id="one-too-many"):
                    answered.append((response.frame_id, response.status, response.error_reason))
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert "no replica answered stream 'one-too-many'" in caught.value.details
        assert "RESOURCE_EXHAUSTED" in caught.value.details
        assert "3 streams, its limit" in caught.value.details
        assert answered, "the frames sent meanwhile were answered"
        assert answered == [(n, DROPPED, "reconnecting") for n in range(len(answered))]
        assert impatient.stream_stats.frames_dropped_locally == len(answered)
        assert impatient.stream_stats.reconnects >= 1
        release.set()
        for responses in await asyncio.gather(*holders):
            assert [r.frame_id for r in responses] == list(range(len(jpegs)))
            assert {r.status for r in responses} <= {OK, DROPPED} and responses[-1].status == OK
        # With the streams gone there is room again.
        assert len(await closed_loop_stream(client, jpegs[:2])) == 2


async def test_a_full_frame_budget_drops_stale_frames_evenly_instead_of_queueing() -> None:
    config = loopback_config(models=("selfie-general",), max_frames_in_flight=2)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        jpegs = [video_frame_jpeg(640, 480, shift=n) for n in range(20)]
        results = await asyncio.gather(
            *(burst_stream(client, jpegs, stream_id=f"call-{n}") for n in range(6))
        )
    for responses in results:
        assert [r.frame_id for r in responses] == list(range(20))
        statuses = [r.status for r in responses]
        assert set(statuses) <= {OK, DROPPED}
        assert statuses[-1] == OK, "every stream's newest frame is served"
    dropped = sum(r.status == DROPPED for responses in results for r in responses)
    assert dropped > 0
    # Queued streams take the room in turn: no stream is starved while others are served.
    served = [sum(r.status == OK for r in responses) for responses in results]
    assert min(served) >= max(served) // 2, f"OK frames per stream: {served}"
    assert service.frame_budget.in_flight == 0


async def test_a_caller_deadline_is_honoured_and_leaves_nothing_behind(
    server: RunningService, client: SegmentationClient
) -> None:
    with pytest.raises(SegmentationError) as caught:
        await client.segment(video_frame_jpeg(1920, 1080), timeout_s=0.001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.1)
    assert all(p.frames_waiting == 0 for p in server.pipelines.values())
    assert (await client.segment(astronaut_jpeg())).mask.data


async def test_a_message_over_the_transport_limit_is_resource_exhausted() -> None:
    config = loopback_config(models=("selfie-general",), max_frame_bytes=100_000)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        with pytest.raises(SegmentationError) as caught:
            await client.segment(b"\xff" * 1_000_000)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details


async def test_an_idle_stream_is_ended_after_its_answers() -> None:
    config = loopback_config(models=("selfie-general",), stream_idle_timeout_s=0.5)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        stalled = asyncio.Event()

        async def frames() -> AsyncIterator[FrameToSend]:
            yield FrameToSend(0, astronaut_jpeg())
            await stalled.wait()  # the camera froze; the call never ends

        responses = []
        with pytest.raises(SegmentationError) as caught:
            async for response in client.stream(frames()):
                responses.append(response)
        stalled.set()
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "sent nothing for 0.5 s" in caught.value.details
        assert [r.status for r in responses] == [OK]
        await asyncio.sleep(0.1)
        assert len(service.streams) == 0


async def test_an_engine_failure_answers_its_batch_internal_and_the_next_batch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = loopback_config(models=("selfie-general",))
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        engine = service.pipelines["selfie-general"].engine
        real_infer = engine.infer
        failures = iter([RuntimeError("CUDA error: an illegal memory access")])

        def infer_failing_once(frames: np.ndarray) -> np.ndarray:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return real_infer(frames)

        monkeypatch.setattr(engine, "infer", infer_failing_once)
        responses = await closed_loop_stream(client, [astronaut_jpeg()] * 3, window=1)
    assert [r.status for r in responses] == [ERROR, OK, OK]
    assert responses[0].error_reason == "internal"
    assert "illegal memory access" in responses[0].error_message


def test_the_client_library_pings_no_more_often_than_the_server_allows() -> None:
    assert loopback_config().min_client_ping_interval_s <= KEEPALIVE_TIME_S


def test_a_progressive_jpeg_with_runaway_scans_is_refused() -> None:
    jpeg = encode_jpeg(astronaut_rgb()[:64, :64], progressive=True)
    last_scan = [m.start() for m in re.finditer(b"\xff\xda", jpeg)][-1]
    end = jpeg.rfind(b"\xff\xd9")
    runaway = jpeg[:end] + jpeg[last_scan:end] * 600 + jpeg[end:]
    codec = JpegCodec(max_frame_bytes=1 << 22, max_frame_pixels=1 << 22)
    with pytest.raises(FrameError) as caught:
        codec.decode_for_model(runaway, 256, 256)
    assert caught.value.reason == FrameErrorReason.CORRUPT_JPEG
