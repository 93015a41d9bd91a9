"""`ResumableStream`'s contract driven by scripted calls, as google-api-core's test_bidi.py
drives `ResumableBidiRpc`: what real servers cannot produce on demand. A call that the server
ends while the client writes (grpcio then reports INTERNAL "Internal error from Core",
grpc/grpc#36066), which codes reopen, the backoff's steps, and the give-up on a clock moved by
hand. The same rules against real servers, through every client: tests/integration/conformance/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import (
    RECONNECTING,
    FrameToSend,
    RetryPolicy,
    SegmentationError,
    resumable,
    retry,
)
from segmentation_client.resumable import ResumableStream
from segmentation_client.retry import should_retry_or_silence

OK, DROPPED = pb.StreamSegmentResponse.OK, pb.StreamSegmentResponse.DROPPED
ENDED_WHILE_WRITING = ("INTERNAL", "Internal error from Core")


def status(code: str, details: str) -> grpc.aio.AioRpcError:
    """A call's end as grpcio reports it."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode[code], grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
    )


class ScriptedCall:
    """One StreamSegment call that keeps to a script: it answers OK each frame written, up to
    `answers` of them, then ends with `end`. Frames written after that are lost, as frames are
    that a client writes into a call the server has ended. With no `end` it ends OK once the
    client is done writing; `silent` answers nothing and never ends (a replica that hangs)."""

    def __init__(
        self,
        answers: int = 1 << 30,
        end: grpc.aio.AioRpcError | None = None,
        stream_id: str = "stream-1",
        silent: bool = False,
    ) -> None:
        self.requests: list[pb.StreamSegmentRequest] = []
        self._answers_left = answers
        self._end = end
        self._stream_id = stream_id
        self._silent = silent
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._ended = False
        if answers == 0 and end is not None:
            self._out.put_nowait(end)  # refused as it opens

    @property
    def frames(self) -> list[int]:
        return [request.frame.frame_id for request in self.requests if request.HasField("frame")]

    async def write(self, request: pb.StreamSegmentRequest) -> None:
        if self._ended:
            raise asyncio.InvalidStateError("RPC already finished")
        self.requests.append(request)
        if not request.HasField("frame") or self._silent or self._answers_left == 0:
            return
        self._answers_left -= 1
        self._out.put_nowait(
            pb.StreamSegmentResponse(
                stream_id=self._stream_id,
                frame_id=request.frame.frame_id,
                capture_timestamp_us=request.frame.capture_timestamp_us,
                status=OK,
            )
        )
        if self._answers_left == 0 and self._end is not None:
            self._out.put_nowait(self._end)

    async def done_writing(self) -> None:
        if self._end is None and not self._silent:
            self._out.put_nowait(grpc.aio.EOF)

    async def read(self) -> object:
        item = await self._out.get()
        if isinstance(item, grpc.aio.AioRpcError):
            self._ended = True
            raise item
        self._ended = item is grpc.aio.EOF
        return item

    def done(self) -> bool:
        return self._ended

    def cancel(self) -> bool:
        self._ended = True
        return True


class Replicas:
    """The calls the stream opens, in turn; what was opened stays readable."""

    def __init__(self, *calls: ScriptedCall, on_open: Callable[[], None] = lambda: None) -> None:
        self._script = list(calls)
        self.opened: list[ScriptedCall] = []
        self._on_open = on_open

    def __call__(self) -> ScriptedCall:
        self._on_open()
        call = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if call in self.opened:  # the script's last call, opened again: a fresh copy
            call = ScriptedCall(call._answers_left, call._end, call._stream_id, call._silent)
        self.opened.append(call)
        return call


@dataclass(frozen=True)
class RecordedBackoff(RetryPolicy):
    """The real policy's limits, with each backoff's attempt number recorded and no wait."""

    attempts: list[int] = field(default_factory=list, compare=False)

    def backoff_s(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return 0.0


class Camera:
    """A caller's frames, never more than `window` of them unanswered (a video client's pace),
    so that a scripted call ends while the caller still has frames to send. `count` None:
    frames until the stream ends; after frame `pause_after` it waits until `resume()`."""

    def __init__(self, count: int | None = None, window: int = 2, pause_after: int = -1) -> None:
        self._count = count
        self._window = window
        self._pause_after = pause_after
        self._room: asyncio.Semaphore | None = None
        self._resumed = asyncio.Event()

    def resume(self) -> None:
        self._resumed.set()

    async def frames(self) -> AsyncIterator[FrameToSend]:
        frame_id = 0
        self._room = asyncio.Semaphore(self._window)
        while self._count is None or frame_id < self._count:
            await self._room.acquire()
            yield FrameToSend(frame_id, b"\xff\xd8 a frame \xff\xd9", capture_timestamp_us=frame_id)
            if frame_id == self._pause_after:
                await self._resumed.wait()
            frame_id += 1

    async def answers(self, resumable_stream: ResumableStream) -> list[pb.StreamSegmentResponse]:
        answers = []
        async for response in resumable_stream:
            answers.append(response)
            assert self._room is not None
            self._room.release()
        return answers


def stream(
    replicas: Replicas,
    camera: Camera,
    policy: RetryPolicy | None = None,
    **options: object,
) -> ResumableStream:
    config = pb.StreamConfig(model="selfie-general")
    policy = policy or RecordedBackoff()
    return ResumableStream(replicas, config, camera.frames(), policy, **options)  # type: ignore[arg-type]


def check_one_answer_per_frame(answers: list[pb.StreamSegmentResponse], frames: int) -> None:
    assert [answer.frame_id for answer in answers] == list(range(frames))
    for answer in answers:
        assert answer.status == OK or (
            answer.status == DROPPED and answer.error_reason == RECONNECTING
        ), answer


async def test_every_frame_is_answered_once_in_order_across_a_reopen() -> None:
    draining = status("UNAVAILABLE", "draining")
    replicas = Replicas(ScriptedCall(answers=3, end=draining), ScriptedCall())
    camera = Camera(12)
    resumable_stream = stream(replicas, camera)
    answers = await camera.answers(resumable_stream)
    check_one_answer_per_frame(answers, 12)
    first, second = replicas.opened
    assert [answer.status for answer in answers[:3]] == [OK] * 3  # the first call's answers
    lost = [answer.frame_id for answer in answers if answer.status == DROPPED]
    assert lost == [f for f in range(12) if f not in first.frames[:3] + second.frames]
    assert resumable_stream.stats.reconnects == 1
    assert resumable_stream.stats.frames_dropped_locally == len(lost)


async def test_frames_written_into_a_call_the_server_ended_are_answered_dropped() -> None:
    # The server ends the call after 2 answers; the client goes on writing until it reads the
    # end: the frames written after the end were never answered there.
    replicas = Replicas(
        ScriptedCall(answers=2, end=status("UNAVAILABLE", "draining")), ScriptedCall()
    )
    camera = Camera(8)
    answers = await camera.answers(stream(replicas, camera))
    check_one_answer_per_frame(answers, 8)
    first, second = replicas.opened
    written_and_lost = [f for f in first.frames[2:] if f not in second.frames]
    assert written_and_lost, "the script lost no frame: it tests nothing"
    assert [answers[f].status for f in written_and_lost] == [DROPPED] * len(written_and_lost)


async def test_a_write_that_races_the_end_as_grpc_reports_it_reopens_the_stream() -> None:
    # grpc/grpc#36066: the server's own status reaches the client as INTERNAL "Internal error
    # from Core" when a write raced it. That INTERNAL is no verdict of the server's.
    replicas = Replicas(ScriptedCall(answers=4, end=status(*ENDED_WHILE_WRITING)), ScriptedCall())
    camera = Camera(10)
    resumable_stream = stream(replicas, camera)
    check_one_answer_per_frame(await camera.answers(resumable_stream), 10)
    assert resumable_stream.stats.reconnects == 1 and len(replicas.opened) == 2


async def test_a_reopened_call_sends_the_same_config_under_the_id_the_server_gave() -> None:
    replicas = Replicas(
        ScriptedCall(answers=2, end=status("UNAVAILABLE", "draining"), stream_id="given-7"),
        ScriptedCall(stream_id="given-7"),
    )
    camera = Camera(6)
    await camera.answers(stream(replicas, camera))
    configs = [call.requests[0].config for call in replicas.opened]
    assert [config.model for config in configs] == ["selfie-general", "selfie-general"]
    assert [config.stream_id for config in configs] == ["", "given-7"]


@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
async def test_a_replica_that_cannot_serve_now_is_left_for_another(code: str) -> None:
    refused = ScriptedCall(answers=0, end=status(code, "full or draining"))
    replicas = Replicas(refused, ScriptedCall())
    camera = Camera(5)
    check_one_answer_per_frame(await camera.answers(stream(replicas, camera)), 5)
    assert len(replicas.opened) == 2


@pytest.mark.parametrize(
    ("code", "details"),
    [
        ("INVALID_ARGUMENT", "mask_width without mask_height"),
        ("NOT_FOUND", "unknown model 'x'"),
        ("UNAUTHENTICATED", "missing bearer token"),
        ("DEADLINE_EXCEEDED", "no frame for 30 s"),
        ("ABORTED", "was replaced by a newer stream"),
        ("INTERNAL", "the model failed"),  # the server's own INTERNAL, with its message
    ],
)
async def test_the_callers_mistakes_and_a_takeover_are_not_retried(code: str, details: str) -> None:
    replicas = Replicas(ScriptedCall(answers=1, end=status(code, details)), ScriptedCall())
    camera = Camera(5)
    with pytest.raises(SegmentationError) as caught:
        await camera.answers(stream(replicas, camera))
    assert caught.value.code == grpc.StatusCode[code] and caught.value.details == details
    assert len(replicas.opened) == 1


async def test_a_stream_ended_for_silence_reopens_when_the_next_frame_comes() -> None:
    silence = status("DEADLINE_EXCEEDED", "no frame for 1 s")
    replicas = Replicas(ScriptedCall(answers=3, end=silence), ScriptedCall())
    policy = RecordedBackoff()
    camera = Camera(6, pause_after=2)
    resumable_stream = stream(replicas, camera, policy, should_reopen=should_retry_or_silence)
    reader = asyncio.create_task(camera.answers(resumable_stream))
    for _ in range(50):  # the silence: the call ended, and no frame came
        await asyncio.sleep(0)
    assert len(replicas.opened) == 1, "reopened before a frame came"
    camera.resume()
    answers = await reader
    check_one_answer_per_frame(answers, 6)
    assert [answer.status for answer in answers] == [OK] * 6, "no frame was lost to the silence"
    assert len(replicas.opened) == 2 and resumable_stream.stats.reconnects == 1
    assert policy.attempts == [], "a silence is no lost replica: no backoff"


async def test_frames_no_answer_came_for_are_dropped_after_the_answer_timeout() -> None:
    replicas = Replicas(ScriptedCall(silent=True), ScriptedCall())
    camera = Camera(6)
    policy = RecordedBackoff(answer_timeout_s=0.3)
    answers = await camera.answers(stream(replicas, camera, policy))
    check_one_answer_per_frame(answers, 6)
    assert answers[0].status == DROPPED, "the hanging replica's frame"
    assert answers[-1].status == OK
    assert len(replicas.opened) >= 2


async def test_the_backoff_grows_with_each_failed_attempt_and_restarts_after_an_answer() -> None:
    refusal = status("UNAVAILABLE", "connection refused")
    replicas = Replicas(
        *[ScriptedCall(answers=0, end=refusal) for _ in range(3)],
        ScriptedCall(answers=2, end=status("UNAVAILABLE", "draining")),
        ScriptedCall(),
    )
    policy = RecordedBackoff()
    camera = Camera(30)
    check_one_answer_per_frame(await camera.answers(stream(replicas, camera, policy)), 30)
    assert policy.attempts == [0, 1, 2, 0]


def test_the_backoff_doubles_up_to_its_ceiling_with_full_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(retry.random, "uniform", uniform)
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=1.0, backoff_multiplier=2.0)
    waits = [policy.backoff_s(attempt) for attempt in range(7)]
    assert waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert all(low == 0.0 for low, _ in bounds), "full jitter: any wait from none to the ceiling"


class HandClock:
    """`time.monotonic` for the stream alone, moved by hand: a second each call opened."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def a_second_passes(self) -> None:
        self.now += 1.0


async def test_the_stream_gives_up_when_no_replica_answered_for_give_up_after_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = HandClock()
    monkeypatch.setattr(resumable, "time", clock)
    # Refused for real first, then every refusal hidden behind the write race: the give-up
    # names the server's own status, not grpcio's INTERNAL.
    replicas = Replicas(
        ScriptedCall(answers=0, end=status("UNAVAILABLE", "draining")),
        ScriptedCall(answers=0, end=status(*ENDED_WHILE_WRITING)),
        on_open=clock.a_second_passes,
    )
    camera = Camera()
    resumable_stream = stream(replicas, camera, RecordedBackoff(give_up_after_s=5.0))
    with pytest.raises(SegmentationError) as caught:
        await camera.answers(resumable_stream)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "for 5.0 s" in caught.value.details
    assert "last: UNAVAILABLE: draining" in caught.value.details
    assert len(replicas.opened) == 6, "attempts at 0, 1, 2, 3, 4 and 5 s"
    assert resumable_stream.stats.reconnects == 5


async def test_an_answer_restarts_the_time_to_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = HandClock()
    monkeypatch.setattr(resumable, "time", clock)
    refusal = status("UNAVAILABLE", "draining")
    replicas = Replicas(
        *[ScriptedCall(answers=0, end=refusal) for _ in range(4)],
        ScriptedCall(answers=1, end=refusal),  # one answer, 4 s after the first refusal
        *[ScriptedCall(answers=0, end=refusal) for _ in range(4)],
        ScriptedCall(),
        on_open=clock.a_second_passes,
    )
    camera = Camera(40)
    answers = await camera.answers(stream(replicas, camera, RecordedBackoff(give_up_after_s=5.0)))
    check_one_answer_per_frame(answers, 40)
    assert len(replicas.opened) == 10, "8 s of refusals, never 5 s without an answer"


async def test_a_failure_of_the_callers_own_frames_reaches_the_caller() -> None:
    async def broken_camera() -> AsyncIterator[FrameToSend]:
        yield FrameToSend(0, b"\xff\xd8 a frame \xff\xd9")
        raise OSError("the camera was unplugged")

    config = pb.StreamConfig(model="selfie-general")
    resumable_stream = ResumableStream(
        Replicas(ScriptedCall()), config, broken_camera(), RecordedBackoff()
    )
    with pytest.raises(OSError, match="unplugged"):
        async for _ in resumable_stream:
            pass
