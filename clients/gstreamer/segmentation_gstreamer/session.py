"""One StreamSegment stream per element, on a thread of its own with its own event loop.

A thin adapter over the client library's `ResumableStream`, which keeps the client contract
(docs/client-contract.md): the streaming thread hands frames in (`send`, which never waits)
and each frame's answer comes back through `on_answer` with the frame's context, one per frame,
in order. The library moves the stream to another replica when its own drains or dies, and
reopens it when the server ended it for silence (a paused pipeline sends nothing). A refusal
that retrying cannot fix (bad token, unknown model, no replica for `give_up_after_s`) ends the
session through `on_failure`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient

PR_SET_NAME = 15  # prctl(2)


@dataclass(frozen=True)
class StreamSettings:
    target: str
    stream_id: str
    model: str = ""
    token: str = ""
    root_certificates: bytes | None = None  # PEM CA of the server; TLS is on with any of three
    client_certificate: bytes | None = None  # PEM client certificate and key, for mutual TLS
    client_key: bytes | None = None
    mask_encoding: int = pb.MASK_ENCODING_JPEG
    temporal_smoothing: float = 0.0
    edge_aware_upscale: bool = False
    composite: pb.Composite | None = None
    answer_timeout_s: float = 2.0
    give_up_after_s: float = 15.0


class StreamSession:
    def __init__(
        self,
        settings: StreamSettings,
        on_answer: Callable[[object, pb.StreamSegmentResponse], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        """`on_answer(context, response)`: the context the frame was sent with."""
        self._settings = settings
        self._on_answer = on_answer
        self._on_failure = on_failure
        self._loop = asyncio.new_event_loop()
        self._frames: asyncio.Queue[FrameToSend | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="segmentation-stream", daemon=True)
        self._main: asyncio.Task[None] | None = None
        self._client: SegmentationClient | None = None

    @property
    def reconnects(self) -> int:
        """Times the stream moved to another replica (or back to its own) so far."""
        return self._client.stream_stats.reconnects if self._client else 0

    def start(self) -> None:
        self._thread.start()

    def send(self, frame: FrameToSend) -> None:
        self._loop.call_soon_threadsafe(self._frames.put_nowait, frame)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel)
            self._thread.join(timeout=10)

    def _cancel(self) -> None:
        if self._main is not None:
            self._main.cancel()

    def _run(self) -> None:
        _name_os_thread("segment-stream")
        asyncio.set_event_loop(self._loop)
        self._main = self._loop.create_task(self._stream())
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass  # stopped
        except Exception as error:  # a refusal, or whatever it is: the pipeline must hear of it
            self._on_failure(error)
        finally:
            self._loop.close()

    async def _stream(self) -> None:
        s = self._settings
        policy = RetryPolicy(answer_timeout_s=s.answer_timeout_s, give_up_after_s=s.give_up_after_s)
        self._client = client = SegmentationClient(
            s.target,
            root_certificates=s.root_certificates,
            client_certificate=s.client_certificate,
            client_key=s.client_key,
            token=s.token or None,
            retry_policy=policy,
        )
        async with client:
            stream = client.stream(
                self._next_frames(), stream_id=s.stream_id, model=s.model,
                mask_encoding=s.mask_encoding, temporal_smoothing=s.temporal_smoothing,
                edge_aware_upscale=s.edge_aware_upscale, composite=s.composite,
                reopen_after_silence=True,
            )  # fmt: skip
            async for answer in stream.answers():
                if answer.frame is not None:
                    self._on_answer(answer.frame.context, answer.response)

    async def _next_frames(self) -> AsyncIterator[FrameToSend]:
        while (frame := await self._frames.get()) is not None:
            yield frame


def _name_os_thread(name: str) -> None:
    """Names the thread for the system too (top -H, /proc), so its CPU time can be told apart
    from GStreamer's threads; Python names its threads only for itself."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: a convenience lost
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15])
