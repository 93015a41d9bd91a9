"""The idle cut-off on the real server: a stream whose caller sends nothing, or reads none of its
answers, for `stream_idle_timeout_s` gets the answers it was due and ends DEADLINE_EXCEEDED
saying which, and the server keeps nothing of it.

What the clients do with such an end (reopen when the next frame comes): the conformance
suite's silence scenarios (tests/integration/conformance/) and the GStreamer element's test
(tests/system/test_gstreamer_element.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client import FrameToSend, SegmentationClient, SegmentationError
from service.app import running_server
from tests.helpers import loopback_config, wait_until
from tests.photos import astronaut_jpeg, video_frame_jpeg

OK = pb.StreamSegmentResponse.OK


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


async def test_a_caller_that_reads_no_answers_is_cut_off_after_the_idle_timeout() -> None:
    # Full-size raw masks (300 kB each) fill the transport's windows at once, so the server's
    # writes wait on the caller, which sends on and reads nothing.
    config = loopback_config(
        models=("selfie-general",), stream_idle_timeout_s=1.0, max_unwritten_answers_per_stream=4
    )
    jpeg = video_frame_jpeg(640, 480)
    async with (
        running_server(config) as service,
        grpc.aio.insecure_channel(service.target) as channel,
    ):

        async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
            yield pb.StreamSegmentRequest(
                config=pb.StreamConfig(
                    stream_id="reads-nothing", mask_encoding=pb.MASK_ENCODING_RAW_U8
                )
            )
            for frame_id in range(10_000):  # until the server stops reading
                yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=frame_id, jpeg=jpeg))
                await asyncio.sleep(1 / 30)

        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment(requests())
        await wait_until(lambda: service.streams.get("reads-nothing") is not None, 10, "opened")
        stream = service.streams.get("reads-nothing")
        await wait_until(lambda: not stream.has_room, 15, "the bound of unwritten answers")
        # Held at its bound, the stream is read no more: its idle timer, armed at its last
        # read, fires on this event loop before this sleep ends.
        await asyncio.sleep(config.stream_idle_timeout_s + 0.5)
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for response in call:  # only now does the caller read
                answers.append(response)
        code, details = caught.value.code(), caught.value.details()
        await wait_until(lambda: service.streams.get("reads-nothing") is None, 10, "freed")
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "read no answers for 1 s" in details, details
    assert answers and [r.frame_id for r in answers] == list(range(len(answers)))
