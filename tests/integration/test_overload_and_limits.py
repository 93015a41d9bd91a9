"""Overload, deadlines, transport limits and engine faults on the real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient, SegmentationError
from segmentation_client.client import KEEPALIVE_TIME_S
from service.app import running_server
from tests.helpers import burst_stream, closed_loop_stream, loopback_config, wait_until
from tests.photos import astronaut_jpeg, video_frame_jpeg

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
    assert service.admission.in_flight == 0


async def test_a_caller_deadline_is_honoured_and_leaves_nothing_behind() -> None:
    # A batch that would close only after a minute: the frame can leave the batcher within the
    # test only because its caller's deadline took it out. A stream that has sent one frame
    # (its frame rate unknown, so the batcher waits for its next one) keeps the batch open.
    # One batch at a time: with two, a lone frame would not wait for company (an idle engine
    # thread each).
    config = loopback_config(
        models=("selfie-general",), max_queue_delay_ms=60_000.0, max_batches_in_flight=1
    )
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        pipeline = service.pipelines["selfie-general"]
        stalled = asyncio.Event()

        async def one_frame() -> AsyncIterator[FrameToSend]:
            yield FrameToSend(0, astronaut_jpeg())
            await stalled.wait()

        stream = asyncio.create_task(burst_answers(client.stream(one_frame())))
        await wait_until(lambda: pipeline.batch_runner.frames_waiting == 1)
        call = asyncio.create_task(client.segment(astronaut_jpeg(), timeout_s=1.0))
        await wait_until(lambda: pipeline.batch_runner.frames_waiting == 2 or call.done())
        assert pipeline.batch_runner.frames_waiting == 2, "the frame waits in the batcher"
        with pytest.raises(SegmentationError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        # The handler's cancellation runs just after the status.
        await wait_until(lambda: pipeline.batch_runner.frames_waiting == 1)
        assert pipeline.batch_runner.frames_waiting == 1, "only the stream's frame is left"
        stalled.set()
        stream.cancel()


async def burst_answers(responses: AsyncIterator[pb.StreamSegmentResponse]) -> None:
    async for _ in responses:
        pass


async def test_a_message_over_the_transport_limit_is_resource_exhausted() -> None:
    config = loopback_config(models=("selfie-general",), max_frame_bytes=100_000)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        with pytest.raises(SegmentationError) as caught:
            await client.segment(b"\xff" * 1_000_000)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details


async def test_an_engine_failure_answers_its_batch_internal_and_the_next_batch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batches close only when full (the delay is a minute): four streams' frames share each.
    config = loopback_config(
        models=("selfie-general",),
        max_batch_size=4,
        max_queue_delay_ms=60e3,
        max_batches_in_flight=1,  # one engine thread: no batch is split over idle ones
    )
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        engine = service.pipelines["selfie-general"].engine
        real_infer = engine.infer
        failed_batches: list[int] = []

        def infer_failing_once(frames: np.ndarray) -> np.ndarray:
            if not failed_batches:
                failed_batches.append(len(frames))
                raise RuntimeError("CUDA error: an illegal memory access")
            return real_infer(frames)

        monkeypatch.setattr(engine, "infer", infer_failing_once)
        results = await asyncio.gather(
            *(
                closed_loop_stream(client, [astronaut_jpeg()] * 2, window=1, stream_id=f"c{n}")
                for n in range(4)
            )
        )
    assert failed_batches == [4]
    for responses in results:
        # Each frame of the failed batch, then the next batch's.
        assert [r.status for r in responses] == [ERROR, OK]
        assert responses[0].error_reason == "internal"
        assert "illegal memory access" in responses[0].error_message
        assert responses[1].batch_size == 4


def test_the_client_library_pings_no_more_often_than_the_server_allows() -> None:
    assert loopback_config().min_client_ping_interval_s <= KEEPALIVE_TIME_S
