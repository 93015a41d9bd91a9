"""Corrupt frames on the real server, real photos damaged: a truncated JPEG, bytes that are no
JPEG and a progressive JPEG with runaway scans are each answered ERROR `corrupt_jpeg` while the
stream goes on, `Segment` answers one INVALID_ARGUMENT, and thousands of generated frames are
each answered OK or ERROR with a reason, the server serving a normal stream afterwards.

The decoder's own checks are unit tests (tests/unit/test_jpeg_decode_and_mask_encode.py), and
so are the GPU path's checks of a frame's structure (tests/unit/test_gpu_frame_path_on_cpu.py)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from functools import cache

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from loadtest.local_server import ServerProcess
from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client import SegmentationClient, SegmentationError
from service.errors import FrameErrorReason
from tests.helpers import ENGINE_INDEPENDENT, closed_loop_stream
from tests.photos import (
    astronaut_jpeg,
    astronaut_rgb,
    cmyk_jpeg,
    encode_jpeg,
    grace_hopper_jpeg,
    runaway_scans_jpeg,
    video_frame_jpeg,
)

FRAMES_PER_EXAMPLE = 200
EXAMPLES = 10  # 2,000 frames in all
REASONS = {reason.value for reason in FrameErrorReason}
OK = pb.StreamSegmentResponse.OK
ERROR = pb.StreamSegmentResponse.ERROR


@cache
def real_jpegs() -> tuple[bytes, ...]:
    photo = astronaut_rgb()
    huge = bytearray(video_frame_jpeg(64, 48))
    sof = huge.find(b"\xff\xc0")
    huge[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") * 2  # claims 65000x65000
    return (
        encode_jpeg(photo),
        grace_hopper_jpeg(),
        video_frame_jpeg(640, 480),
        encode_jpeg(photo, progressive=True),
        encode_jpeg(np.asarray(Image.fromarray(photo).convert("L"))),
        cmyk_jpeg(),
        encode_jpeg(photo[:1, :1]),
        bytes(huge),
    )


def _truncated(choice: tuple[int, float]) -> bytes:
    jpeg = real_jpegs()[choice[0]]
    return jpeg[: int(len(jpeg) * choice[1])]


def _bit_flipped(choice: tuple[int, list[int]]) -> bytes:
    jpeg = bytearray(real_jpegs()[choice[0]])
    for bit in choice[1]:
        position = bit % (len(jpeg) * 8)
        jpeg[position // 8] ^= 1 << (position % 8)
    return bytes(jpeg)


_photo_index = st.integers(0, len(real_jpegs()) - 1)
frames_strategy = st.one_of(
    st.binary(min_size=1, max_size=4096),
    st.tuples(_photo_index, st.floats(0.01, 1.0)).map(_truncated),
    st.tuples(_photo_index, st.lists(st.integers(0, 1 << 24), min_size=1, max_size=16)).map(
        _bit_flipped
    ),
    _photo_index.map(lambda index: real_jpegs()[index]),
)


def blocking_closed_loop_stream(target: str, jpegs: list[bytes]) -> list[pb.StreamSegmentResponse]:
    """One stream that sends each frame after the previous one's answer (so none drops), on
    grpc's blocking API: hypothesis runs its examples outside the event loop."""
    answered: queue.Queue[None] = queue.Queue()

    def requests() -> Iterator[pb.StreamSegmentRequest]:
        yield pb.StreamSegmentRequest(config=pb.StreamConfig(mask_width=64, mask_height=64))
        for frame_id, jpeg in enumerate(jpegs):
            yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=frame_id, jpeg=jpeg))
            answered.get(timeout=60)

    with grpc.insecure_channel(target) as channel:
        responses = []
        for response in pb_grpc.SegmentationServiceStub(channel).StreamSegment(requests()):
            responses.append(response)
            answered.put(None)
        return responses


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    with ServerProcess("--models", "selfie-general", "--log-level", "WARNING") as server:
        yield server
    assert server.process.returncode == 0, server.output


def test_generated_frames_are_each_answered_ok_or_error_with_a_reason(
    fuzz_server: ServerProcess,
) -> None:
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(frames_strategy, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
    def check(jpegs: list[bytes]) -> None:
        responses = blocking_closed_loop_stream(fuzz_server.target, jpegs)
        assert [r.frame_id for r in responses] == list(range(len(jpegs)))
        for response in responses:
            if response.status == pb.StreamSegmentResponse.OK:
                assert len(response.mask.data) == 64 * 64
                seen["ok"] = seen.get("ok", 0) + 1
            else:
                assert response.status == pb.StreamSegmentResponse.ERROR
                assert response.error_reason in REASONS and response.error_message
                seen[response.error_reason] = seen.get(response.error_reason, 0) + 1

    check()
    print(f"\n{sum(seen.values())} fuzzed frames answered: {seen}")
    assert sum(seen.values()) == EXAMPLES * FRAMES_PER_EXAMPLE
    assert {"ok", "corrupt_jpeg", "too_many_pixels", "unsupported_jpeg"} <= set(seen)
    assert "internal" not in seen

    after = blocking_closed_loop_stream(fuzz_server.target, [grace_hopper_jpeg()] * 5)
    assert [r.status for r in after] == [pb.StreamSegmentResponse.OK] * 5


@ENGINE_INDEPENDENT
async def test_a_corrupt_frame_is_answered_error_and_the_stream_goes_on(
    client: SegmentationClient,
) -> None:
    good = astronaut_jpeg()
    jpegs = [good, good[: len(good) // 2], b"this is not a jpeg", good]
    responses = await closed_loop_stream(client, jpegs, window=1)
    assert [r.status for r in responses] == [OK, ERROR, ERROR, OK]
    assert [r.error_reason for r in responses] == ["", "corrupt_jpeg", "corrupt_jpeg", ""]
    assert "Premature end of JPEG file" in responses[1].error_message
    assert "Not a JPEG file" in responses[2].error_message


@ENGINE_INDEPENDENT
async def test_a_progressive_jpeg_with_runaway_scans_is_corrupt_and_the_stream_goes_on(
    client: SegmentationClient,
) -> None:
    jpegs = [astronaut_jpeg(), runaway_scans_jpeg(), astronaut_jpeg()]
    responses = await closed_loop_stream(client, jpegs, window=1)
    assert [r.status for r in responses] == [OK, ERROR, OK]
    assert responses[1].error_reason == "corrupt_jpeg"
    assert responses[1].error_code == pb.FRAME_ERROR_REASON_CORRUPT_JPEG


@ENGINE_INDEPENDENT
async def test_a_corrupt_image_in_segment_is_invalid_argument(client: SegmentationClient) -> None:
    with pytest.raises(SegmentationError) as caught:
        await client.segment(b"\xff\xd8 broken")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "corrupt_jpeg" in caught.value.details
